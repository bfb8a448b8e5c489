"""Files that macOS hands the app: drops on the Dock icon, "Open With", double-clicks.

macOS delivers these as ``QFileOpenEvent`` on the QApplication object, one event per file,
and (on a cold start) before the main window exists. ``FileOpenCollector`` catches them with an
event filter, gathers the files of one drop into a single ``files_opened`` signal, and holds
everything back until the consumer calls ``start_delivering()`` so nothing dropped during
start-up is lost.

Usage (as early as possible, right after the QApplication is created)::

    collector = FileOpenCollector(app)
    ...                                   # build the main window and the document controller
    collector.files_opened.connect(document_controller.open_files)
    collector.start_delivering()
"""

from __future__ import annotations

from PySide6.QtCore import QCoreApplication, QEvent, QObject, QTimer, Signal
from PySide6.QtGui import QFileOpenEvent


class FileOpenCollector(QObject):
    """Event filter turning ``QFileOpenEvent``s into one ``files_opened(list[str])`` per drop."""

    # Absolute local paths, in the order macOS sent them, without duplicates.
    files_opened = Signal(list)

    def __init__(self, app: QCoreApplication, parent: QObject | None = None) -> None:
        super().__init__(parent if parent is not None else app)
        self._app = app
        self._pending: list[str] = []
        self._delivering = False
        # macOS sends one event per file of a multi-file drop, back to back: a zero-delay
        # timer lets them all arrive, so the consumer gets the drop as one batch.
        self._flush_timer = QTimer(self)
        self._flush_timer.setSingleShot(True)
        self._flush_timer.setInterval(0)
        self._flush_timer.timeout.connect(self._flush)
        app.installEventFilter(self)

    def uninstall(self) -> None:
        self._app.removeEventFilter(self)

    def pending(self) -> list[str]:
        """Paths received but not delivered yet (before ``start_delivering`` or this loop turn)."""
        return list(self._pending)

    def start_delivering(self) -> None:
        """The consumer is connected: hand over what arrived during start-up, then stream."""
        self._delivering = True
        if self._pending:
            self._flush_timer.start()

    def eventFilter(self, watched: QObject, event: QEvent) -> bool:  # noqa: N802 (Qt API)
        if watched is self._app and event.type() == QEvent.Type.FileOpen:
            path = _local_path(event)  # type: ignore[arg-type]
            if path and path not in self._pending:
                self._pending.append(path)
                if self._delivering:
                    self._flush_timer.start()
            return True  # nobody else in the app handles FileOpen
        return False

    def _flush(self) -> None:
        if not self._delivering or not self._pending:
            return
        paths, self._pending = self._pending, []
        self.files_opened.emit(paths)


def _local_path(event: QFileOpenEvent) -> str:
    """The event's local file path; empty for non-file URLs (e.g. a custom URL scheme)."""
    path = event.file()
    if path:
        return path
    url = event.url()
    return url.toLocalFile() if url.isLocalFile() else ""
