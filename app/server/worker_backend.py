"""The server's ``GenerationBackend`` over the app's worker: one model, one queue, window and server.

uvicorn calls ``submit`` and ``cancel`` from its own thread, but the ``WorkerClient`` lives on the
GUI thread, so both are marshalled there through queued signals and never block the caller.
Server requests are ordinary worker jobs (named "server"), so they wait in the same first-in
first-out queue as the window's chats: neither side can starve the other.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Optional

from PySide6.QtCore import QObject, Qt, Signal, Slot

from app.worker.worker import NO_MODEL_MESSAGE, WorkerClient
from mlx_backend.events import ChatRequest, Failed
from mlx_backend.server.backend import Cancel, JobEnded, Rejected, ServedModel, Sink, count_request, run_request

JOB_NAME = "server"
COUNT_JOB_NAME = "server-count"
STOPPING_MESSAGE = "The local server is stopping."


class _Request:
    """One server request as the GUI thread tracks it."""

    def __init__(self, request: ChatRequest, sink: Sink, client: str, counting: bool = False) -> None:
        self.request = request
        self.counting = counting  # a count_tokens request: renders the prompt, runs no model
        self.sink = sink
        self.client = client
        self.cancelled = threading.Event()  # set at once by cancel(), before the GUI thread acts
        self.handle: Any = None
        self.started = False
        self.ended = False


def _served_id(model_name: str, info: object) -> str:
    """A repo id as it is ("mlx-community/Qwen3-8B-4bit"); a local folder by its name."""
    name = model_name or str(getattr(info, "name", "") or "")
    path = Path(name)
    if path.is_absolute() or name.startswith(("~", ".")):
        return path.name or name
    return name


def _server_job(request: ChatRequest, counting: bool = False):
    def job(engine, cancel: threading.Event):
        if engine is None:  # the model went away between the route's check and this turn
            yield Rejected(NO_MODEL_MESSAGE, 503, "no_model")
        elif counting:
            yield from count_request(engine, request)
        else:
            yield from run_request(engine, request, cancel)

    return job


class WorkerBackend(QObject):
    """Create it on the GUI thread; ``submit``, ``cancel`` and ``served_model`` work from any."""

    # True while one of this backend's requests runs on the worker (not while it only waits).
    answeringChanged = Signal(bool)
    _submitted = Signal(object)
    _cancelled = Signal(object)

    def __init__(self, worker: WorkerClient, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self._worker = worker
        self._lock = threading.Lock()
        self._served: Optional[ServedModel] = None
        if worker.model_info is not None and not worker.loading:
            self._served = ServedModel(_served_id(worker.model_name, worker.model_info), worker.model_info)
        self._open: set[_Request] = set()
        self._running = 0
        self._closed = False
        queued = Qt.ConnectionType.QueuedConnection
        self._submitted.connect(self._start, queued)
        self._cancelled.connect(self._cancel, queued)
        worker.loadStarted.connect(self._on_load_started)
        worker.modelLoaded.connect(self._on_model_loaded)
        worker.modelLoadFailed.connect(self._on_load_failed)
        worker.modelUnloaded.connect(self._on_unloaded)

    # ------------------------------------------------------- any thread
    def served_model(self) -> Optional[ServedModel]:
        with self._lock:
            return self._served

    def submit(self, request: ChatRequest, sink: Sink, *, client: str = "") -> Cancel:
        return self._queue(_Request(request, sink, client))

    def count_tokens(self, request: ChatRequest, sink: Sink) -> Cancel:
        # The engine (and its tokenizer) is the worker's alone, so counting is a worker job too:
        # it renders the prompt only, but waits its turn behind whatever runs.
        return self._queue(_Request(request, sink, "", counting=True))

    def _queue(self, item: _Request) -> Cancel:
        self._submitted.emit(item)

        def cancel() -> None:
            if not item.cancelled.is_set():
                item.cancelled.set()
                self._cancelled.emit(item)

        return cancel

    @property
    def answering(self) -> bool:
        return self._running > 0

    # ------------------------------------------------------- GUI thread
    def close(self) -> None:
        """Stop every request now: running ones are cancelled, all of them end at once."""
        if self._closed:
            return
        self._closed = True
        for item in list(self._open):
            if item.handle is not None:
                item.handle.cancel()
            self._end(item)
        for signal, slot in ((self._worker.loadStarted, self._on_load_started),
                             (self._worker.modelLoaded, self._on_model_loaded),
                             (self._worker.modelLoadFailed, self._on_load_failed),
                             (self._worker.modelUnloaded, self._on_unloaded)):
            signal.disconnect(slot)
        if self._running:
            self._running = 0
            self.answeringChanged.emit(False)

    @Slot(object)
    def _start(self, item: _Request) -> None:
        if self._closed:
            item.sink(Rejected(STOPPING_MESSAGE, 503, "busy"))
            item.sink(JobEnded())
            return
        if item.cancelled.is_set():  # the client left before the request reached the queue
            item.sink(JobEnded())
            return
        handle = self._worker.submit(_server_job(item.request, item.counting), needs_model=False,
                                     name=COUNT_JOB_NAME if item.counting else JOB_NAME)
        item.handle = handle
        self._open.add(item)
        handle.started.connect(lambda: self._on_started(item))
        handle.event.connect(lambda event: item.ended or item.sink(event))
        handle.failed.connect(lambda message: item.ended or item.sink(Failed(message)))
        handle.finished.connect(lambda: self._on_finished(item))

    @Slot(object)
    def _cancel(self, item: _Request) -> None:
        if item.handle is not None and not item.ended:
            item.handle.cancel()  # queued: dropped (finished follows); running: stops within a token

    def _on_started(self, item: _Request) -> None:
        if item.ended or item.counting:  # counting isn't answering: the status bar stays as is
            return
        item.started = True
        self._running += 1
        if self._running == 1:
            self.answeringChanged.emit(True)

    def _on_finished(self, item: _Request) -> None:
        if item.started and not item.ended:
            self._running -= 1
            if self._running == 0:
                self.answeringChanged.emit(False)
        self._end(item)

    def _end(self, item: _Request) -> None:
        if item.ended:
            return
        item.ended = True
        self._open.discard(item)
        item.sink(JobEnded())

    def _on_load_started(self, _name: str) -> None:
        with self._lock:
            self._served = None

    def _on_model_loaded(self, info: object) -> None:
        served = ServedModel(_served_id(self._worker.model_name, info), info) if info is not None else None
        with self._lock:
            self._served = served

    def _on_load_failed(self, _message: str) -> None:
        with self._lock:
            self._served = None

    @Slot()
    def _on_unloaded(self) -> None:
        # Ejected: /v1/models lists nothing and requests get the routes' own 503.
        with self._lock:
            self._served = None
