"""The oldest macOS the .app runs on, pinned once and checked everywhere it shows.

``MIN_MACOS`` (mlx_backend/selfcheck.py, the oldest macOS MLX supports) is the build's
``MACOSX_DEPLOYMENT_TARGET`` (set by the workflow), the Info.plist's ``LSMinimumSystemVersion``
(set by the spec) and the ceiling for what goes in: MLX publishes one wheel per macOS release,
and a wheel for a newer macOS carries a metallib (and dylibs) that older releases refuse.

    python packaging/deployment_target.py "dist/Qwen Desk.app"   # on macOS, after the build
"""

from __future__ import annotations

import os
import plistlib
import re
import subprocess
import sys
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from mlx_backend.selfcheck import MIN_MACOS  # noqa: E402

MLX_DISTRIBUTIONS = ("mlx", "mlx-metal")


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("."))


def wheel_macos_versions(wheel_metadata: str) -> list[str]:
    """The macOS versions in a WHEEL file's tags ("macosx_14_0_arm64" -> "14.0")."""
    return [f"{major}.{minor}" for major, minor in re.findall(r"^Tag: .*macosx_(\d+)_(\d+)_", wheel_metadata, re.M)]


def minos_values(otool_output: str) -> list[str]:
    """``minos`` of LC_BUILD_VERSION (and ``version`` of the older LC_VERSION_MIN_MACOSX)."""
    found = re.findall(r"^\s*minos (\d+(?:\.\d+)*)", otool_output, re.M)
    found += re.findall(r"cmd LC_VERSION_MIN_MACOSX\n.*?\n\s*version (\d+(?:\.\d+)*)", otool_output, re.S)
    return found


def newer_than(versions, target: str) -> list[str]:
    return [v for v in versions if version_tuple(v) > version_tuple(target)]


def _is_macho(path: Path) -> bool:
    try:
        with path.open("rb") as handle:
            magic = handle.read(4)
    except OSError:
        return False
    return magic in {b"\xcf\xfa\xed\xfe", b"\xce\xfa\xed\xfe", b"\xca\xfe\xba\xbe", b"\xbe\xba\xfe\xca"}


def problems(app: Path, target: str) -> list[str]:
    found = []
    if target != MIN_MACOS:
        found.append(f"MACOSX_DEPLOYMENT_TARGET is {target}, but MLX's minimum (MIN_MACOS) is {MIN_MACOS}")
    plist = plistlib.loads((app / "Contents" / "Info.plist").read_bytes())
    if plist.get("LSMinimumSystemVersion") != target:
        found.append(f"LSMinimumSystemVersion is {plist.get('LSMinimumSystemVersion')}, not {target}")
    for name in MLX_DISTRIBUTIONS:
        try:
            wheel = metadata.distribution(name).read_text("WHEEL") or ""
        except metadata.PackageNotFoundError:
            continue
        for version in newer_than(wheel_macos_versions(wheel), target):
            found.append(
                f"the installed {name} wheel is built for macOS {version}: its metallib would not load on "
                f"{target}; install the macosx_{target.replace('.', '_')} wheel (build on that macOS or pin it)"
            )
    for path in sorted(p for p in app.rglob("*") if p.is_file() and not p.is_symlink() and _is_macho(p)):
        otool = subprocess.run(["otool", "-l", str(path)], capture_output=True, text=True).stdout
        for version in newer_than(minos_values(otool), target):
            found.append(f"{path.relative_to(app)} requires macOS {version} (minos)")
    return found


def main(argv: list[str]) -> int:
    app = Path(argv[0])
    target = os.environ.get("MACOSX_DEPLOYMENT_TARGET", "")
    if not target:
        print("deployment_target: MACOSX_DEPLOYMENT_TARGET is not set", file=sys.stderr)
        return 1
    found = problems(app, target)
    for problem in found:
        print(f"FAIL: {problem}", file=sys.stderr)
    print(f"deployment target {target}: " + ("ok" if not found else f"{len(found)} problem(s)"))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
