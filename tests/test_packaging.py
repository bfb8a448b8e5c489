"""The PyInstaller bundle builds and its frozen CLI generates like the source tree does.

Slow (a full PyInstaller build, about two minutes on two cores) but run in CI: it is the only
check that the hidden imports, the mlx libraries and the pruning in packaging/qwen_desk.spec
still add up to a program that runs. On Linux the spec makes a one-folder bundle; on macOS the
same spec makes the .app (see .github/workflows/macos-app.yml).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.checkpoints import write_random_checkpoint
from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.slow

SPEC = REPO_ROOT / "packaging" / "qwen_desk.spec"
BUILD_TIMEOUT_S = 900
GENERATE_ARGS = ["generate", "--prompt", "hi", "--max-tokens", "5", "--temp", "0"]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["HF_HUB_OFFLINE"] = "1"
    env.pop("PYTHONPATH", None)  # the frozen program must not borrow the source tree
    return env


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    """Build once per run into a temporary folder; returns the one-folder bundle's root."""
    try:
        import PyInstaller  # noqa: F401
    except ImportError:
        pytest.fail("PyInstaller is not installed: it belongs to the test extra (pip install -e '.[test]')")
    work = tmp_path_factory.mktemp("pyinstaller")
    result = subprocess.run(
        [sys.executable, "-m", "PyInstaller", "--noconfirm", "--log-level", "WARN",
         "--workpath", str(work / "build"), "--distpath", str(work / "dist"), str(SPEC)],
        cwd=REPO_ROOT, env=_env(), capture_output=True, text=True, timeout=BUILD_TIMEOUT_S,
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


def test_frozen_program_reports_a_bad_model_path_in_one_clear_line(frozen_program, tmp_path):
    missing = tmp_path / "no-such-model"
    result = subprocess.run(
        [str(frozen_program), "generate", "--model", str(missing), "--prompt", "hi", "--max-tokens", "2"],
        cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.startswith("qwen-desk: ")
    assert "Traceback" not in result.stderr


def test_bundle_ships_resources_and_leaves_heavy_test_dependencies_out(bundle):
    internal = bundle / "_internal"
    assert (internal / "resources" / "icons" / "icon_256.png").is_file()
    assert (internal / "resources" / "tray.svg").is_file()
    for unwanted in ("torch", "torchgen", "pytest", "sympy", "pydantic", "sentencepiece"):
        assert not (internal / unwanted).exists(), f"{unwanted} should not be in the bundle"
    assert not list(internal.glob("torch-*.dist-info"))
    # transformers is imported by mlx-lm, but only its auto/tokenizer layer: none of the
    # ~450 model implementations (40+ MB) may ride along.
    shipped_models = {p.name for p in (internal / "transformers" / "models").iterdir() if p.is_dir()}
    assert "auto" in shipped_models
    assert len(shipped_models) < 10, sorted(shipped_models)
