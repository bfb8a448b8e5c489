"""MLX's Metal library must sit beside every path libmlx can be loaded through.

MLX finds ``mlx.metallib`` in the folder of the libmlx it was loaded from, by the path it was
loaded *through* (dladdr; links are not resolved). PyInstaller collects libmlx into
``mlx/lib/`` and also links it into the top-level folder (``libmlx.dylib -> mlx/lib/...``):
on macOS it rewrites library references to ``@rpath`` pointing there, so the dylib is loaded
through that link, where the wheel's layout has no metallib, and the first GPU operation
fails with "Failed to load the default metallib".

Two halves, both pure and testable without a Mac:

* ``metallib_datas(toc, metallib)``: the spec adds a ``mlx.metallib`` data entry beside
  every libmlx entry of the analysis (files and links alike; PyInstaller keeps the links
  among ``a.datas``, the files among ``a.binaries``);
* ``metallib_problems(root)``: checks a built tree (the Linux one-folder bundle, or the .app
  with its ``Contents/Frameworks`` / ``Contents/Resources`` cross-links).

    python packaging/bundle_check.py "dist/Qwen Desk.app" --expect-metallib
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path, PurePosixPath

METALLIB = "mlx.metallib"


def is_libmlx(name: str) -> bool:
    """libmlx.dylib, libmlx.so, libmlx.so.0.32 ... (not libmlx_foo or mlx.metallib)."""
    return name.startswith("libmlx.") and (name.endswith(".dylib") or ".so" in name)


def metallib_destinations(toc) -> list[str]:
    """The bundle folders (posix, "." for the top) holding a libmlx entry of a PyInstaller TOC."""
    folders = {
        str(PurePosixPath(Path(dest).as_posix()).parent)
        for dest, _source, _typecode in toc
        if is_libmlx(PurePosixPath(Path(dest).as_posix()).name)
    }
    return sorted(folders)


def metallib_datas(toc, metallib: Path) -> list[tuple[str, str, str]]:
    """DATA entries putting ``metallib`` beside each libmlx entry of ``toc`` that has none yet."""
    present = {PurePosixPath(Path(dest).as_posix()) for dest, _source, _typecode in toc}
    entries = []
    for folder in metallib_destinations(toc):
        dest = PurePosixPath(folder) / METALLIB
        if dest not in present:
            entries.append((str(dest), str(metallib), "DATA"))
    return entries


def libmlx_paths(root: Path) -> list[Path]:
    """Every path under ``root`` named like libmlx, through folder links too (files and links)."""
    found: list[Path] = []
    seen_folders: set[str] = set()
    for folder, subfolders, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen_folders:  # reached again through a folder link: same entries, and no loops
            subfolders[:] = []
            continue
        seen_folders.add(real)
        found.extend(Path(folder) / name for name in files + subfolders if is_libmlx(name))
    return sorted(found)


def metallib_problems(root: Path, *, expect_metallib: bool = False) -> list[str]:
    """What is wrong with ``root`` under the rule; empty when MLX finds its library from every path.

    ``expect_metallib``: the bundle must ship one (macOS); also fails if no libmlx is found.
    Without it (the Linux CPU wheel has no metallib) a tree without any metallib passes."""
    root = Path(root)
    paths = libmlx_paths(root)
    problems = []
    has_any = any(Path(folder, METALLIB).exists() for folder, _, _ in os.walk(root))
    if expect_metallib and not paths:
        problems.append(f"no libmlx found under {root}")
    if expect_metallib and not has_any:
        problems.append(f"no {METALLIB} anywhere under {root}")
    if not expect_metallib and not has_any:
        return problems
    for path in paths:
        shown = path.relative_to(root)
        if not path.exists():
            problems.append(f"{shown} is a broken link")
        elif not (path.parent / METALLIB).is_file():
            how = f"a link to {os.readlink(path)}" if path.is_symlink() else "a copy"
            problems.append(
                f"{shown} ({how}) can be loaded, but no {METALLIB} sits beside it: MLX would look for "
                f"{shown.parent / METALLIB} and fail at the first GPU operation"
            )
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", type=Path, help="the .app or the one-folder bundle")
    parser.add_argument("--expect-metallib", action="store_true", help="the bundle must ship mlx.metallib (macOS)")
    args = parser.parse_args(argv)
    problems = metallib_problems(args.bundle, expect_metallib=args.expect_metallib)
    for path in libmlx_paths(args.bundle):
        print(f"libmlx path: {path.relative_to(args.bundle)}")
    for problem in problems:
        print(f"FAIL: {problem}", file=sys.stderr)
    print("metallib beside every libmlx path: " + ("ok" if not problems else f"{len(problems)} problem(s)"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
