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
from typing import Callable, Iterable, Optional

from PySide6.QtCore import QObject, Signal

from mlx_backend.errors import QwenDeskError

log = logging.getLogger(__name__)
Resolver = Callable[..., object]
PROGRESS_INTERVAL_S = 0.1


def _resolve(path_or_repo: str, *, progress, cancel):  # pragma: no cover - thin indirection
    from mlx_backend.hub.download import resolve_model_path

    return resolve_model_path(path_or_repo, progress=progress, cancel=cancel)


def _cached_repo_ids() -> set[str]:
    from mlx_backend.hub.download import list_cached_models

    return {model.repo_id for model in list_cached_models()}


def _discard_partial(repo_id: str) -> None:
    from mlx_backend.hub.download import delete_cached_model

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
        # Set when the app quits: the receivers are being torn down, so the thread stays quiet.
        self._silent = threading.Event()
        self._thread: Optional[threading.Thread] = None
        self._last_progress = 0.0

    def start(self) -> None:
        try:
            existed = self.repo_id in _cached_repo_ids()
        except Exception:  # noqa: BLE001 - an unreadable cache must not stop the download
            existed = True  # unknown: never delete what might be the user's
        self._thread = threading.Thread(target=self._run, args=(existed,), name=f"download {self.repo_id}", daemon=True)
        self._thread.start()

    def cancel(self, *, silently: bool = False) -> None:
        """Stop the download; its partial files are removed as it ends.

        ``silently``: emit nothing more (used on quit, when the receivers are going away)."""
        if silently:
            self._silent.set()
        self._cancel.set()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait up to ``timeout`` seconds for the thread to end; True when it has."""
        if self._thread is not None:
            self._thread.join(timeout)
        return not self.running

    def _emit(self, signal, *args) -> None:
        if not self._silent.is_set():
            signal.emit(*args)

    def _report(self, done: int, total: int) -> None:
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_INTERVAL_S or (total and done >= total):
            self._last_progress = now
            self._emit(self.progress, int(done), int(total))

    def _run(self, existed: bool) -> None:
        try:
            folder = self._resolver(self.repo_id, progress=self._report, cancel=self._cancel)
        except Exception as error:  # noqa: BLE001 - reported to the user, never raised into Qt
            if not existed:
                _discard_partial(self.repo_id)
            if self._cancel.is_set():
                self._emit(self.cancelled)
            elif isinstance(error, QwenDeskError):
                self._emit(self.failed, str(error))
            else:
                log.error("download failed", exc_info=error)
                self._emit(self.failed, f"Downloading {self.repo_id} failed: {error}")
            return
        self._emit(self.succeeded, str(folder))


def cancel_and_wait(tasks: Iterable[DownloadTask], timeout_s: float) -> list[DownloadTask]:
    """Cancel every task silently, then wait for their threads, ``timeout_s`` in total.

    For quitting: each thread removes its partial files as a cancelled download does, and
    quitting never waits longer than the bound. Returns the tasks still running after it."""
    tasks = list(tasks)
    for task in tasks:  # all at once, so the threads wind down side by side
        task.cancel(silently=True)
    deadline = time.monotonic() + max(0.0, timeout_s)
    for task in tasks:
        task.wait(max(0.0, deadline - time.monotonic()))
    return [task for task in tasks if task.running]
