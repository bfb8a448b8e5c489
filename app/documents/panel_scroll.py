"""The document panels' strip in a scroll area: at small window sizes it gives up height and
scrolls instead of squeezing the transcript or clipping the plan mid-line."""

from __future__ import annotations

from typing import Callable, Optional

from PySide6.QtCore import QEvent, QObject, QSize, Qt
from PySide6.QtWidgets import QFrame, QScrollArea, QSizePolicy, QVBoxLayout, QWidget

# The panels never take more than this share of the chat pane's height.
MAX_SHARE = 0.5


class PanelScroll(QScrollArea):
    """Shows ``holder`` at its natural height when there is room, scrolling when not; hidden
    while the holder is (the holder decides when it has something to show)."""

    def __init__(self, holder: QWidget, *, pane: Optional[Callable[[], Optional[QWidget]]] = None,
                 reserve: Callable[[], int] = lambda: 0) -> None:
        super().__init__()
        # The chat pane whose height the panels share (by default the parent), and what else of
        # that share is taken (a pinned button bar below).
        self._pane = pane or self.parentWidget
        self._reserve = reserve
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
        pane = self._pane()
        if pane is not None and pane.height() > 0:
            height = min(height, max(0, int(pane.height() * MAX_SHARE) - self._reserve()))
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


class PinnedPanels(QWidget):
    """The scrolling panels with ``footer`` pinned below them, shown while ``follows`` is (the
    plan's Summarize and Cancel below the plan): the plan scrolls, its buttons stay in view."""

    def __init__(self, holder: QWidget, footer: QWidget, follows: QWidget) -> None:
        super().__init__()
        self.setObjectName("DocumentPanels")
        self.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Maximum)
        self.footer = footer
        self.scroll = PanelScroll(holder, pane=self.parentWidget, reserve=self._footer_height)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.scroll)
        layout.addWidget(footer)
        self._follows = follows
        footer.setVisible(not follows.isHidden())
        follows.installEventFilter(self)
        self.scroll.installEventFilter(self)
        self._sync()

    def _sync(self) -> None:
        # Nothing to show takes no room (not even the pane's spacing around an empty strip).
        self.setVisible(not (self.scroll.isHidden() and self.footer.isHidden()))

    def _footer_height(self) -> int:
        return self.footer.sizeHint().height() if not self.footer.isHidden() else 0

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        kind = event.type()
        if kind not in (QEvent.Type.ShowToParent, QEvent.Type.HideToParent):
            return False
        if watched is getattr(self, "_follows", None):
            self.footer.setVisible(kind == QEvent.Type.ShowToParent)
            self.scroll.updateGeometry()
            self._sync()
        elif watched is getattr(self, "scroll", None):
            self._sync()
        return False
