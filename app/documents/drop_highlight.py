"""The drop highlight: a tinted, dashed frame over the chat pane while files are dragged over it.

It ignores the mouse (drags go to the widgets under it) and follows its parent's size.
Hiding is deferred one loop turn so moving between two watched widgets (leave, then enter)
doesn't flicker.
"""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import QEvent, QObject, QRectF, Qt, QTimer
from PySide6.QtGui import QColor, QPainter, QPalette, QPen
from PySide6.QtWidgets import QWidget

from app.documents.drop import DocumentDropFilter


class DropHighlight(QWidget):
    def __init__(self, parent: QWidget, drops: Optional[DocumentDropFilter] = None) -> None:
        super().__init__(parent)
        self.setObjectName("DropHighlight")
        self.setAttribute(Qt.WidgetAttribute.WA_TransparentForMouseEvents, True)
        self.text = "Drop to attach to your next message"
        self._hide_timer = QTimer(self)
        self._hide_timer.setSingleShot(True)
        self._hide_timer.setInterval(0)
        self._hide_timer.timeout.connect(self.hide)
        parent.installEventFilter(self)
        self.hide()
        if drops is not None:
            drops.dragActiveChanged.connect(self.set_active)

    def set_active(self, active: bool) -> None:
        if active:
            self._hide_timer.stop()
            self.setGeometry(self.parentWidget().rect())
            self.show()
            self.raise_()
        else:
            self._hide_timer.start()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        if watched is self.parentWidget() and event.type() == QEvent.Type.Resize:
            self.setGeometry(self.parentWidget().rect())
        return False

    def paintEvent(self, _event) -> None:  # noqa: N802 (Qt API)
        painter = QPainter(self)
        painter.setRenderHint(QPainter.RenderHint.Antialiasing)
        accent = self.palette().color(QPalette.ColorRole.Highlight)
        fill = QColor(accent)
        fill.setAlpha(28)
        rect = QRectF(self.rect()).adjusted(8, 8, -8, -8)
        painter.setBrush(fill)
        pen = QPen(accent, 2.0, Qt.PenStyle.DashLine)
        painter.setPen(pen)
        painter.drawRoundedRect(rect, 12, 12)
        font = painter.font()
        font.setPointSizeF(font.pointSizeF() * 1.3)
        font.setBold(True)
        painter.setFont(font)
        painter.setPen(accent)
        painter.drawText(rect, Qt.AlignmentFlag.AlignCenter, self.text)
