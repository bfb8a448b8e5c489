"""Model downloads off the GUI thread, with progress and cancel.

``DownloadTask`` lives on the GUI thread; its Python worker thread runs
``resolve_model_path`` and reports through the task's signals, which Qt queues to the GUI
thread. A failed or cancelled first download removes what it left in the cache, so no half
model is ever listed.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Callable, Optional

from PySide6.QtCore import QObject, Signal

from mlx_backend.errors import QwenDeskError

log = logging.getLogger(__name__)
Resolver = Callable[..., object]
PROGRESS_INTERVAL_S = 0.1


def _resolve(path_or_repo: str, *, progress, cancel):  # pragma: no cover - thin indirection
    from mlx_backend.download import resolve_model_path

    return resolve_model_path(path_or_repo, progress=progress, cancel=cancel)


def _cached_repo_ids() -> set[str]:
    from mlx_backend.download import list_cached_models

    return {model.repo_id for model in list_cached_models()}


def _discard_partial(repo_id: str) -> None:
    from mlx_backend.download import delete_cached_model

    try:
        delete_cached_model(repo_id)
    except QwenDeskError:
        pass  # nothing was written


class DownloadTask(QObject):
    progress = Signal(int, int)  # done bytes, total bytes (total grows as files start)
    succeeded = Signal(str)  # the local folder
    failed = Signal(str)  # a plain-language message
    cancelled = Signal()

    def __init__(self, repo_id: str, resolver: Resolver = _resolve, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.repo_id = repo_id
        self._resolver = resolver
        self._cancel = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._last_progress = 0.0

    def start(self) -> None:
        try:
            existed = self.repo_id in _cached_repo_ids()
        except Exception:  # noqa: BLE001 - an unreadable cache must not stop the download
            existed = True  # unknown: never delete what might be the user's
        self._thread = threading.Thread(target=self._run, args=(existed,), name=f"download {self.repo_id}", daemon=True)
        self._thread.start()

    def cancel(self) -> None:
        self._cancel.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: Optional[float] = None) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def _report(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_INTERVAL_S or (total and done >= total):
            self._last_progress = now
            self.progress.emit(int(done), int(total))

    def _run(self, existed: bool) -> None:
        try:
            folder = self._resolver(self.repo_id, progress=self._report, cancel=self._cancel)
        except Exception as error:  # noqa: BLE001 - reported to the user, never raised into Qt
            if not existed:
                _discard_partial(self.repo_id)
            if self._cancel.is_set():
                self.cancelled.emit()
            elif isinstance(error, QwenDeskError):
                self.failed.emit(str(error))
            else:
                log.error("download failed", exc_info=error)
                self.failed.emit(f"Downloading {self.repo_id} failed: {error}")
            return
        self.succeeded.emit(str(folder))
