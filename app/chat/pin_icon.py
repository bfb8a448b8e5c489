"""The small pin drawn beside pinned chats in the sidebar (painted: no emoji font needed)."""

from __future__ import annotations

from PySide6.QtCore import QPointF, Qt
from PySide6.QtGui import QColor, QIcon, QPainter, QPen, QPixmap, QPolygonF

SIZE = 16


def pin_icon(color: QColor) -> QIcon:
    icon = QIcon()
    for scale in (1, 2):  # crisp on Retina screens too
        pixmap = QPixmap(SIZE * scale, SIZE * scale)
        pixmap.setDevicePixelRatio(scale)
        pixmap.fill(Qt.GlobalColor.transparent)
        painter = QPainter(pixmap)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        painter.setPen(Qt.PenStyle.NoPen)
        painter.setBrush(color)
        # A push pin leaning right: round head, collar, and a needle to the lower left.
        painter.translate(SIZE / 2, SIZE / 2)
        painter.rotate(45)
        painter.drawRoundedRect(-3.0, -7.0, 6.0, 5.0, 1.5, 1.5)
        painter.drawPolygon(QPolygonF([QPointF(-5.0, 0.5), QPointF(5.0, 0.5), QPointF(2.5, -2.5), QPointF(-2.5, -2.5)]))
        pen = QPen(color, 1.4)
        pen.setCapStyle(Qt.PenCapStyle.RoundCap)
        painter.setPen(pen)
        painter.drawLine(QPointF(0.0, 0.5), QPointF(0.0, 7.0))
        painter.end()
        icon.addPixmap(pixmap)
    return icon
