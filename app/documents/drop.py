"""Accept files dragged from Finder onto any widget: the transcript, the composer, a panel.

``DocumentDropFilter`` is an event filter, so the watched widgets need no subclassing. It takes
drags that carry at least one local file URL (a text or web-link drag passes through to the
widget untouched) and emits ``filesDropped(list[str])`` with the local paths in drop order
(a dropped folder is a path like any other; the reader reads the documents inside it).
For scroll areas and text edits Qt delivers drag events to the ``viewport()``, so ``install``
watches the viewport as well as the widget itself.
"""

from __future__ import annotations

from typing import Optional

from PySide6.QtCore import QEvent, QMimeData, QObject, Signal
from PySide6.QtWidgets import QAbstractScrollArea, QWidget


def local_file_paths(mime: Optional[QMimeData]) -> list[str]:
    """Local file paths carried by a drag, without duplicates; web URLs are ignored."""
    if mime is None or not mime.hasUrls():
        return []
    paths: list[str] = []
    for url in mime.urls():
        if url.isLocalFile():
            path = url.toLocalFile()
            if path and path not in paths:
                paths.append(path)
    return paths


class DocumentDropFilter(QObject):
    """Turns local-file drops on the watched widgets into ``filesDropped(paths)``."""

    filesDropped = Signal(list)
    # True while a file drag is over a watched widget (the window shows a drop highlight).
    dragActiveChanged = Signal(bool)

    def __init__(self, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self._watched: list[QWidget] = []

    def install(self, widget: QWidget) -> None:
        """Watch ``widget`` (and its viewport, for scroll areas and text edits)."""
        targets = [widget]
        if isinstance(widget, QAbstractScrollArea):
            targets.append(widget.viewport())
        for target in targets:
            if target in self._watched:
                continue
            target.setAcceptDrops(True)
            target.installEventFilter(self)
            self._watched.append(target)
            # A deleted widget leaves the list (``watched`` must not hand out dead widgets).
            target.destroyed.connect(lambda _=None, t=target: self._forget(t))

    @property
    def watched(self) -> list[QWidget]:
        return list(self._watched)

    def _forget(self, target: QWidget) -> None:
        if target in self._watched:
            self._watched.remove(target)

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        kind = event.type()
        if kind in (QEvent.Type.DragEnter, QEvent.Type.DragMove):
            if local_file_paths(event.mimeData()):  # type: ignore[attr-defined]
                event.acceptProposedAction()  # type: ignore[attr-defined]
                if kind == QEvent.Type.DragEnter:
                    self.dragActiveChanged.emit(True)
                return True
            return False
        if kind == QEvent.Type.DragLeave:
            self.dragActiveChanged.emit(False)
            return False
        if kind == QEvent.Type.Drop:
            paths = local_file_paths(event.mimeData())  # type: ignore[attr-defined]
            if not paths:
                return False
            event.acceptProposedAction()  # type: ignore[attr-defined]
            self.dragActiveChanged.emit(False)
            self.filesDropped.emit(paths)
            return True  # a text edit must not also paste the file's URL
        return False
