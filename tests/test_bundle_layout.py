"""The metallib rule (packaging/bundle_check.py) on both bundle layouts, without a Mac.

MLX opens mlx.metallib beside the path libmlx was loaded through. The .app trees here are laid
out by PyInstaller's own BUNDLE step (its TOC processing: Contents/Frameworks for code,
Contents/Resources for data, symlinks between them) from the TOC the spec's analysis gives on
macOS, so they have the same links a real build has; the real Linux bundle is checked in
tests/test_packaging.py.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

from tests.support.paths import REPO_ROOT

_spec = importlib.util.spec_from_file_location("bundle_check", REPO_ROOT / "packaging" / "bundle_check.py")
bundle_check = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bundle_check)

# What the spec's Analysis yields for mlx on macOS: the wheel's mlx/lib/{libmlx.dylib,
# mlx.metallib}, the extension, and the top-level link PyInstaller adds for @rpath resolution
# (after the analysis, links sit among the datas).
MAC_BINARIES = [
    ("mlx/lib/libmlx.dylib", "/wheel/mlx/lib/libmlx.dylib", "BINARY"),
    ("mlx/core.cpython-311-darwin.so", "/wheel/mlx/core.cpython-311-darwin.so", "EXTENSION"),
]
MAC_DATAS = [
    ("libmlx.dylib", "mlx/lib/libmlx.dylib", "SYMLINK"),
    ("mlx/lib/mlx.metallib", "/wheel/mlx/lib/mlx.metallib", "DATA"),
    ("base_library.zip", "/build/base_library.zip", "DATA"),
]
EXECUTABLE = [("Qwen Desk", "/build/Qwen Desk", "EXECUTABLE")]
# The Linux one-folder bundle (CPU wheel: no metallib of its own) under _internal/.
LINUX_BINARIES = [
    ("mlx/lib/libmlx.so", "/wheel/mlx/lib/libmlx.so", "BINARY"),
    ("mlx/core.cpython-311-x86_64-linux-gnu.so", "/wheel/mlx/core.so", "EXTENSION"),
    ("libmlx.so", "mlx/lib/libmlx.so", "SYMLINK"),
]
METALLIB_SOURCE = "/wheel/mlx/lib/mlx.metallib"


def _materialize(root: Path, toc) -> Path:
    """Create the files and links of a final TOC under ``root`` (files hold their source path)."""
    for dest, source, typecode in toc:
        path = root / dest
        path.parent.mkdir(parents=True, exist_ok=True)
        if typecode == "SYMLINK":
            os.symlink(source, path)
        else:
            path.write_text(source)
    return root


def _app(tmp_path: Path, datas) -> Path:
    from PyInstaller.building.osx import BUNDLE

    # The TOC processing is a method using only static helpers: run it as BUNDLE.assemble does.
    toc = BUNDLE._process_bundle_toc(BUNDLE, EXECUTABLE + MAC_BINARIES + list(datas))
    return _materialize(tmp_path / "Qwen Desk.app", toc)


def _one_folder(tmp_path: Path, datas) -> Path:
    root = tmp_path / "qwen-desk"
    _materialize(root / "_internal", LINUX_BINARIES + list(datas))
    (root / "qwen-desk").write_text("executable")
    return root


def test_the_app_made_by_the_old_spec_loads_libmlx_through_a_link_with_no_metallib(tmp_path):
    app = _app(tmp_path, MAC_DATAS)
    # The same check the workflow used to make: it passes on this broken bundle.
    assert list(app.rglob("mlx.metallib"))
    problems = bundle_check.metallib_problems(app, expect_metallib=True)
    assert len(problems) == 2, problems
    assert problems[0].startswith("Contents/Frameworks/libmlx.dylib (a link to mlx/lib/libmlx.dylib)")
    assert "Contents/Frameworks/mlx.metallib" in problems[0]
    assert problems[1].startswith("Contents/Resources/libmlx.dylib")


def test_the_app_with_the_spec_s_metallib_entries_has_one_beside_every_libmlx_path(tmp_path):
    datas = MAC_DATAS + bundle_check.metallib_datas(MAC_BINARIES + MAC_DATAS, Path(METALLIB_SOURCE))
    app = _app(tmp_path, datas)
    assert bundle_check.metallib_problems(app, expect_metallib=True) == []
    contents = app / "Contents"
    paths = {str(p.relative_to(app)) for p in bundle_check.libmlx_paths(app)}
    assert paths == {
        "Contents/Frameworks/libmlx.dylib", "Contents/Frameworks/mlx/lib/libmlx.dylib",
        "Contents/Resources/libmlx.dylib", "Contents/Resources/mlx/lib/libmlx.dylib",
    }
    # BUNDLE keeps data in Resources (sealed by the signature) and links it from Frameworks.
    beside_link = contents / "Frameworks" / "mlx.metallib"
    assert beside_link.is_symlink() and beside_link.resolve() == (contents / "Resources" / "mlx.metallib").resolve()
    assert beside_link.read_text() == METALLIB_SOURCE


def test_metallib_entries_go_beside_each_libmlx_entry_once():
    entries = bundle_check.metallib_datas(MAC_BINARIES + MAC_DATAS, Path(METALLIB_SOURCE))
    assert entries == [("mlx.metallib", METALLIB_SOURCE, "DATA")]  # mlx/lib has the wheel's
    assert bundle_check.metallib_datas(MAC_BINARIES, Path(METALLIB_SOURCE)) == [
        ("mlx/lib/mlx.metallib", METALLIB_SOURCE, "DATA")]  # the link is what needs the second one
    linux = bundle_check.metallib_datas(LINUX_BINARIES, Path("/stand-in/mlx.metallib"))
    assert [dest for dest, _, _ in linux] == ["mlx.metallib", "mlx/lib/mlx.metallib"]


def test_the_one_folder_layout_follows_the_same_rule(tmp_path):
    metallib_in_package = [("mlx/lib/mlx.metallib", METALLIB_SOURCE, "DATA")]
    broken = _one_folder(tmp_path / "old", metallib_in_package)
    (problem,) = bundle_check.metallib_problems(broken, expect_metallib=True)
    assert problem.startswith("_internal/libmlx.so (a link to mlx/lib/libmlx.so)")

    fixed = _one_folder(
        tmp_path / "new", metallib_in_package + bundle_check.metallib_datas(LINUX_BINARIES + metallib_in_package, Path(METALLIB_SOURCE))
    )
    assert bundle_check.metallib_problems(fixed, expect_metallib=True) == []


def test_a_cpu_bundle_without_any_metallib_passes_unless_one_is_expected(tmp_path):
    root = _one_folder(tmp_path, [])
    assert len(bundle_check.libmlx_paths(root)) == 2
    assert bundle_check.metallib_problems(root) == []
    problems = bundle_check.metallib_problems(root, expect_metallib=True)
    assert any("no mlx.metallib anywhere" in p for p in problems)


def test_a_broken_libmlx_link_and_an_empty_tree_are_problems(tmp_path):
    root = tmp_path / "b"
    (root / "lib").mkdir(parents=True)
    (root / "lib" / "mlx.metallib").write_text("x")
    os.symlink("gone/libmlx.dylib", root / "lib" / "libmlx.dylib")
    assert bundle_check.metallib_problems(root) == ["lib/libmlx.dylib is a broken link"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert bundle_check.metallib_problems(empty, expect_metallib=True)[0].startswith("no libmlx found")


def test_folder_links_are_followed_without_looping(tmp_path):
    root = tmp_path / "t"
    real = root / "Frameworks" / "mlx"
    real.mkdir(parents=True)
    (real / "libmlx.dylib").write_text("x")
    (real / "mlx.metallib").write_text("x")
    (root / "Resources").mkdir()
    os.symlink("../Frameworks/mlx", root / "Resources" / "mlx")
    os.symlink("..", real / "loop")  # a cycle must not hang the walk
    assert bundle_check.metallib_problems(root, expect_metallib=True) == []
    (real / "mlx.metallib").unlink()
    (root / "Resources" / "mlx.metallib").write_text("x")  # beside nothing that loads libmlx
    assert len(bundle_check.metallib_problems(root, expect_metallib=True)) == 1


@pytest.mark.parametrize(
    ("name", "expected"),
    [("libmlx.dylib", True), ("libmlx.so", True), ("libmlx.so.0.32", True), ("libmlx_ext.so", False),
     ("mlx.metallib", False), ("libmlx.a", False)],
)
def test_which_names_are_libmlx(name, expected):
    assert bundle_check.is_libmlx(name) is expected


def test_the_command_line_fails_on_the_old_app_and_passes_on_the_new(tmp_path, capsys):
    old = _app(tmp_path / "old", MAC_DATAS)
    assert bundle_check.main([str(old), "--expect-metallib"]) == 1
    assert "FAIL: Contents/Frameworks/libmlx.dylib" in capsys.readouterr().err
    new = _app(tmp_path / "new", MAC_DATAS + bundle_check.metallib_datas(MAC_BINARIES + MAC_DATAS, Path(METALLIB_SOURCE)))
    assert bundle_check.main([str(new), "--expect-metallib"]) == 0


_dt_spec = importlib.util.spec_from_file_location("deployment_target", REPO_ROOT / "packaging" / "deployment_target.py")
deployment_target = importlib.util.module_from_spec(_dt_spec)
_dt_spec.loader.exec_module(deployment_target)

OTOOL_BUILD_VERSION = """Load command 9
      cmd LC_BUILD_VERSION
  cmdsize 32
 platform 1
    minos 15.0
      sdk 15.2
   ntools 1
"""
OTOOL_VERSION_MIN = """Load command 8
      cmd LC_VERSION_MIN_MACOSX
  cmdsize 16
  version 11.0
      sdk 14.0
"""


def test_the_deployment_target_is_one_value_in_the_spec_the_workflow_and_the_self_check():
    import yaml

    workflow = yaml.safe_load((REPO_ROOT / ".github" / "workflows" / "macos-app.yml").read_text())
    assert workflow["jobs"]["app"]["env"]["MACOSX_DEPLOYMENT_TARGET"] == deployment_target.MIN_MACOS
    spec = (REPO_ROOT / "packaging" / "qwen_desk.spec").read_text()
    assert '"LSMinimumSystemVersion": MIN_MACOS' in spec


def test_a_wheel_or_binary_for_a_newer_macos_is_caught():
    wheel = "Wheel-Version: 1.0\nTag: cp311-cp311-macosx_15_0_arm64\n"
    assert deployment_target.wheel_macos_versions(wheel) == ["15.0"]
    assert deployment_target.newer_than(deployment_target.wheel_macos_versions(wheel), "14.0") == ["15.0"]
    assert deployment_target.newer_than(["14.0", "13.5"], "14.0") == []
    assert deployment_target.minos_values(OTOOL_BUILD_VERSION) == ["15.0"]
    assert deployment_target.minos_values(OTOOL_VERSION_MIN) == ["11.0"]


def test_the_plist_must_declare_the_deployment_target(tmp_path):
    import plistlib

    app = tmp_path / "Qwen Desk.app"
    (app / "Contents").mkdir(parents=True)
    target = deployment_target.MIN_MACOS
    for declared, expected in ((target, []), ("13.5", [f"LSMinimumSystemVersion is 13.5, not {target}"])):
        (app / "Contents" / "Info.plist").write_bytes(plistlib.dumps({"LSMinimumSystemVersion": declared}))
        assert deployment_target.problems(app, target) == expected
    assert "MIN_MACOS" in deployment_target.problems(app, "13.0")[0]
