"""The document panels' strip in a scroll area: at small window sizes it gives up height and
scrolls instead of squeezing the transcript or clipping the plan mid-line."""

from __future__ import annotations

from PySide6.QtCore import QEvent, QObject, QSize, Qt
from PySide6.QtWidgets import QFrame, QScrollArea, QSizePolicy, QWidget

# The panels never take more than this share of the chat pane's height.
MAX_SHARE = 0.5


class PanelScroll(QScrollArea):
    """Shows ``holder`` at its natural height when there is room, scrolling when not; hidden
    while the holder is (the holder decides when it has something to show)."""

    def __init__(self, holder: QWidget) -> None:
        super().__init__()
        self.setObjectName("DocumentPanelsScroll")
        self.setFrameShape(QFrame.Shape.NoFrame)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self.viewport().setAutoFillBackground(False)
        self.setStyleSheet("QScrollArea { background: transparent; }")
        self._holder = holder
        self.setWidget(holder)
        self.setVisible(not holder.isHidden())
        holder.installEventFilter(self)

    def sizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        hint = self._holder.sizeHint()
        height = hint.height()
        pane = self.parentWidget()
        if pane is not None and pane.height() > 0:
            height = min(height, int(pane.height() * MAX_SHARE))
        return QSize(hint.width(), height)

    def minimumSizeHint(self) -> QSize:  # noqa: N802 (Qt API)
        # One line of the plan and its buttons stay reachable; the rest scrolls.
        return QSize(0, min(self._holder.sizeHint().height(), 72))

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        if watched is getattr(self, "_holder", None):
            kind = event.type()
            if kind == QEvent.Type.ShowToParent:
                self.show()
            elif kind == QEvent.Type.HideToParent:
                self.hide()
            if kind in (QEvent.Type.LayoutRequest, QEvent.Type.ShowToParent, QEvent.Type.Resize):
                self.updateGeometry()
            return False
        return super().eventFilter(watched, event)  # the scroll area watches its own parts
