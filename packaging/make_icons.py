"""Render resources/icon.svg into the PNGs the app and the bundle use.

    python packaging/make_icons.py                 # refresh resources/icons/*.png (committed)
    python packaging/make_icons.py --iconset DIR   # also lay out DIR as a macOS .iconset

The .icns itself is made on macOS by the workflow: ``iconutil -c icns DIR -o X.icns``
(iconutil exists only there). The PNGs are committed so Linux builds and the running app
(window icon) need no SVG rendering at start-up.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SOURCE_SVG = ROOT / "resources" / "icon.svg"
PNG_DIR = ROOT / "resources" / "icons"
SIZES = (16, 32, 64, 128, 256, 512, 1024)
# iconutil's required names: each point size at 1x and 2x.
ICONSET_POINT_SIZES = (16, 32, 128, 256, 512)


def png_path(size: int, png_dir: Path = PNG_DIR) -> Path:
    return png_dir / f"icon_{size}.png"


def render_pngs(svg: Path = SOURCE_SVG, png_dir: Path = PNG_DIR) -> list[Path]:
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QGuiApplication, QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    _app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841 (keeps Qt up)
    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"{svg} is not a valid SVG")
    png_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for size in SIZES:
        image = QImage(size, size, QImage.Format.Format_ARGB32_Premultiplied)
        image.fill(Qt.GlobalColor.transparent)
        painter = QPainter(image)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
        renderer.render(painter)
        painter.end()
        target = png_path(size, png_dir)
        if not image.save(str(target), "PNG"):
            raise SystemExit(f"could not write {target}")
        written.append(target)
    return written


def write_iconset(iconset: Path, png_dir: Path = PNG_DIR) -> Path:
    """Copy the PNGs under the names ``iconutil`` expects (icon_16x16.png, icon_16x16@2x.png…)."""
    iconset.mkdir(parents=True, exist_ok=True)
    for points in ICONSET_POINT_SIZES:
        for scale, suffix in ((1, ""), (2, "@2x")):
            source = png_path(points * scale, png_dir)
            if not source.exists():
                raise SystemExit(f"missing {source}: run packaging/make_icons.py first")
            (iconset / f"icon_{points}x{points}{suffix}.png").write_bytes(source.read_bytes())
    return iconset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iconset", type=Path, help="also write a macOS .iconset folder here")
    parser.add_argument("--no-render", action="store_true", help="use the committed PNGs as they are")
    args = parser.parse_args(argv)
    if not args.no_render:
        for path in render_pngs():
            print(path.relative_to(ROOT))
    if args.iconset:
        print(write_iconset(args.iconset))
    return 0


if __name__ == "__main__":
    sys.exit(main())
