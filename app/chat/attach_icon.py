"""A drawn paperclip for the composer's attach button (no emoji font needed, follows the theme)."""

from __future__ import annotations

from PySide6.QtCore import QPointF, QRectF, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPainterPath, QPen, QPixmap


def paperclip_icon(color: QColor, size: int = 18) -> QIcon:
    scale = 3  # drawn large, shown small: smooth on any screen
    pixmap = QPixmap(size * scale, size * scale)
    pixmap.fill(Qt.GlobalColor.transparent)
    painter = QPainter(pixmap)
    painter.setRenderHint(QPainter.RenderHint.Antialiasing)
    painter.scale(size * scale / 16, size * scale / 16)
    painter.translate(8, 8)
    painter.rotate(40)
    painter.translate(-8.5, -8.5)
    path = QPainterPath(QPointF(11, 5))
    path.lineTo(11, 11.5)
    path.arcTo(QRectF(6, 9, 5, 5), 0, -180)  # the outer loop's bottom
    path.lineTo(6, 3.5)
    path.arcTo(QRectF(6, 1.75, 3.5, 3.5), 180, -180)  # its top
    path.lineTo(9.5, 10.5)
    path.arcTo(QRectF(8, 9.75, 1.5, 1.5), 0, -180)  # the inner loop
    path.lineTo(8, 5)
    pen = QPen(color, 1.3)
    pen.setCapStyle(Qt.PenCapStyle.RoundCap)
    painter.setPen(pen)
    painter.drawPath(path)
    painter.end()
    pixmap.setDevicePixelRatio(scale)
    return QIcon(pixmap)
