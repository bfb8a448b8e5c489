"""The wheel ships every package and the icons; the PyInstaller bundle builds and its frozen
CLI generates like the source tree does.

The bundle tests are slow (a full PyInstaller build, about two minutes on two cores) but run in
CI: they are the only check that the hidden imports, the mlx libraries and the pruning in
packaging/qwen_desk.spec still add up to a program that runs. On Linux the spec makes a
one-folder bundle; on macOS the same spec makes the .app (see .github/workflows/macos-app.yml).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.support.checkpoints import write_random_checkpoint
from tests.support.paths import REPO_ROOT

SPEC = REPO_ROOT / "packaging" / "qwen_desk.spec"
STAND_IN_METALLIB = b"stand-in for mlx.metallib (Linux mlx has none)"
BUILD_TIMEOUT_S = 900
GENERATE_ARGS = ["generate", "--prompt", "hi", "--max-tokens", "5", "--temp", "0"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    env.pop("PYTHONPATH", None)  # the frozen program must not borrow the source tree
    return env


ICONS = ["icon.svg", "tray.svg", *(f"icons/icon_{size}.png" for size in (16, 32, 64, 128, 256, 512, 1024))]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel pip builds (offline), from a copy of the checkout so the tree stays clean."""
    source = tmp_path_factory.mktemp("wheel-source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(REPO_ROOT / name, source / name)
    for folder in ("app", "mlx_backend", "resources"):
        shutil.copytree(REPO_ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "--quiet", "-w", str(out), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    (built,) = out.glob("qwen_desk-*.whl")
    return built


def test_wheel_ships_every_package_and_the_icons(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {f"app/resources/{icon}" for icon in ICONS} <= names
    # pyproject.toml lists the packages (for the resources mapping): none may be missing.
    checkout_packages = {
        str(init.parent.relative_to(REPO_ROOT))
        for top in ("app", "mlx_backend")
        for init in (REPO_ROOT / top).rglob("__init__.py")
    }
    shipped_packages = {str(Path(name).parent) for name in names if name.endswith("/__init__.py")}
    assert checkout_packages - shipped_packages == set()


def test_an_installed_copy_loads_its_icons(wheel, tmp_path):
    target = tmp_path / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-index", "--quiet", "--target",
         str(target), str(wheel)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    probe = (
        "import json\n"
        "from PySide6.QtGui import QGuiApplication\n"
        "application = QGuiApplication([])\n"
        "import app\n"
        "from app.quick_ask.tray import app_icon, menu_bar_icon, resources_dir\n"
        "print(json.dumps({'app': app.__file__, 'resources': str(resources_dir()),\n"
        "    'sizes': [s.width() for s in app_icon().availableSizes()],\n"
        "    'tray': not menu_bar_icon().pixmap(22, 22).isNull()}))\n"
    )
    env = {**_env(), "PYTHONPATH": str(target), "QT_QPA_PLATFORM": "offscreen"}
    run = subprocess.run(
        [sys.executable, "-c", probe], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr[-4000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    assert Path(report["app"]).is_relative_to(target)  # the installed copy, not the checkout
    assert Path(report["resources"]) == target / "app" / "resources"
    assert sorted(report["sizes"]) == [16, 32, 64, 128, 256, 512, 1024]
    assert report["tray"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """Build once per run into a temporary folder; returns the one-folder bundle's root."""
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        pytest.fail("PyInstaller is not installed: it belongs to the test extra (pip install -e '.[test]')")
    work = tmp_path_factory.mktemp("pyinstaller")
    env = _env()
    if sys.platform != "darwin":
        # Linux mlx ships no Metal library: hand the spec a stand-in so the bundle shows where
        # it puts one (the macOS rule, checked below on this real tree).
        stand_in = work / "mlx.metallib"
        stand_in.write_bytes(STAND_IN_METALLIB)
        env["QWEN_DESK_METALLIB"] = str(stand_in)
    result = subprocess.run(
        [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
         "--workpath", str(work / "build"), "--distpath", str(work / "dist"), str(SPEC)],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
    )
    assert result.returncode == 0, f"PyInstaller failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    root = work / "dist" / "qwen-desk"
    assert root.is_dir(), f"no bundle at {root}: {sorted(p.name for p in (work / 'dist').iterdir())}"
    return root


@pytest.fixture(scope="module")
def frozen_program(bundle: Path) -> Path:
    name = "Qwen Desk" if sys.platform == "darwin" else "qwen-desk"
    program = bundle / name
    assert program.is_file() and os.access(program, os.X_OK)
    return program


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("packaged-model"))


@pytest.mark.slow
def test_frozen_generate_streams_the_same_tokens_as_the_source_tree(frozen_program, checkpoint, tmp_path):
    args = [*GENERATE_ARGS[:1], "--model", str(checkpoint), *GENERATE_ARGS[1:]]
    frozen = subprocess.run(
        [str(frozen_program), *args], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=300,
    )
    assert frozen.returncode == 0, f"frozen generate failed:\n{frozen.stdout}\n{frozen.stderr[-4000:]}"
    assert frozen.stdout.strip(), "the frozen program printed no tokens"

    source = subprocess.run(
        [sys.executable, "-m", "app.main", *args], cwd=REPO_ROOT, env=_env(), capture_output=True, text=True,
        timeout=300,
    )
    assert source.returncode == 0, source.stderr[-4000:]
    # Greedy decoding of the same checkpoint: the bundle must not change a single token.
    assert frozen.stdout == source.stdout


@pytest.mark.slow
def test_frozen_program_reports_a_bad_model_path_in_one_clear_line(frozen_program, tmp_path):
    missing = tmp_path / "no-such-model"
    result = subprocess.run(
        [str(frozen_program), "generate", "--model", str(missing), "--prompt", "hi", "--max-tokens", "2"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("qwen-desk: ")
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_bundle_ships_resources_and_leaves_heavy_test_dependencies_out(bundle):
    internal = bundle / "_internal"
    assert (internal / "app" / "resources" / "icons" / "icon_256.png").is_file()
    assert (internal / "app" / "resources" / "tray.svg").is_file()
    for unwanted in ("torch", "torchgen", "pytest", "sympy", "pydantic", "sentencepiece"):
        assert not (internal / unwanted).exists(), f"{unwanted} should not be in the bundle"
    assert not list(internal.glob("torch-*.dist-info"))
    # transformers is imported by mlx-lm, but only its auto/tokenizer layer: none of the
    # ~450 model implementations (40+ MB) may ride along.
    shipped_models = {p.name for p in (internal / "transformers" / "models").iterdir() if p.is_dir()}
    assert "auto" in shipped_models
    assert len(shipped_models) < 10, sorted(shipped_models)


@pytest.mark.slow
def test_a_metallib_sits_beside_every_path_libmlx_can_be_loaded_through(bundle):
    import importlib.util

    spec = importlib.util.spec_from_file_location("bundle_check", REPO_ROOT / "packaging" / "bundle_check.py")
    bundle_check = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bundle_check)

    paths = [path.relative_to(bundle) for path in bundle_check.libmlx_paths(bundle)]
    # The real library and the top-level link PyInstaller adds: the second path is the one
    # macOS loads through (@rpath), and it is why the rule matters.
    assert any(path.parts[-3:-1] == ("mlx", "lib") for path in paths), paths
    assert any((bundle / path).is_symlink() and path.parent == Path("_internal") for path in paths), paths
    assert bundle_check.metallib_problems(bundle, expect_metallib=True) == []
    if sys.platform != "darwin":
        for path in paths:
            assert (bundle / path).parent.joinpath("mlx.metallib").read_bytes() == STAND_IN_METALLIB


@pytest.mark.slow
def test_frozen_self_check_runs_an_mlx_operation(frozen_program, tmp_path):
    import mlx.core as mx

    # On macOS the workflow runs this with --require-gpu in the .app: a real Metal operation.
    result = subprocess.run(
        [str(frozen_program), "self-check", "--any-device", "--json"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["mlx"] == mx.__version__
    assert report["device"] == mx.default_device().type.name
