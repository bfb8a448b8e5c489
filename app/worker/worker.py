"""The inference worker: one QThread that owns the Engine and the one loaded model.

The GUI thread never runs MLX. Windows talk to a ``WorkerClient`` (a GUI-thread QObject):
``submit(job)`` queues a job, first in first out, and returns its ``JobHandle``
(``app/worker/handle.py``); a job is any callable ``job(engine, cancel) -> Iterable[object]``
run on the worker thread, so a chat turn is ``chat_job(request)`` and a document summary is
another (``mlx_backend/documents/jobs.py``). ``handle.cancel()`` sets the running job's
``threading.Event`` (the engine checks it between tokens and prefill chunks) or drops it from
the queue.

Each job's events reach only its own handle, relayed signal to signal through queued
connections, so every slot runs on the GUI thread. Token deltas are batched (see
``batching``) so a fast model cannot flood the GUI's event loop. Model loading is the worker's
own business: its signals are connected straight to the client's.
"""

from __future__ import annotations

import gc
import itertools
import logging
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Literal, Optional

from PySide6.QtCore import QObject, Qt, QThread, Signal, Slot

from app.models.installed import validate_model_folder
from app.models.speed_up import LoadOptions, local_model_folder
from app.worker.batching import DEFAULT_INTERVAL_S, EventBatcher
from app.worker.handle import JobHandle, JobRelay
from app.worker.protocols import InferenceEngine, Job
from mlx_backend.events import ChatRequest
from mlx_backend.errors import QwenDeskError

log = logging.getLogger(__name__)

# ``loader(model, progress)``; with a speed-up also ``draft=folder`` or ``mtp=True``.
EngineLoader = Callable[..., InferenceEngine]
# Quitting waits this long for the running job to honour its cancel (the engine checks it
# between prefill chunks and tokens, well within this).
SHUTDOWN_TIMEOUT_MS = 1500
NO_MODEL_MESSAGE = "No model is loaded yet. Choose one in Model \u203a Manage Models\u2026"


@dataclass(frozen=True)
class LoadProgress:
    """Model loading progress; ``fraction`` is None while the total is unknown."""

    fraction: Optional[float]
    message: str = ""


@dataclass
class _QueuedJob:
    job_id: str
    kind: Literal["job", "load", "check", "unload"]
    run: Optional[Job] = None
    relay: Optional[JobRelay] = None
    model: str = ""
    speed_up: LoadOptions = field(default_factory=LoadOptions)
    needs_model: bool = True
    cancel: threading.Event = field(default_factory=threading.Event)
    loader: Optional[EngineLoader] = None  # a load with a loader of its own (a remote engine)


class _JobQueue:
    """FIFO shared by the GUI thread (producer) and the worker thread (consumer)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: deque[_QueuedJob] = deque()
        self.current: Optional[_QueuedJob] = None

    def put(self, item: _QueuedJob) -> None:
        with self._lock:
            self._items.append(item)

    def take(self) -> Optional[_QueuedJob]:
        with self._lock:
            self.current = self._items.popleft() if self._items else None
            return self.current

    def done(self) -> None:
        with self._lock:
            self.current = None

    def cancel(self, job_id: Optional[str]) -> Optional[Literal["running", "removed"]]:
        """Signal the running job (``job_id`` None: whatever runs) or take a queued one out.

        One step under the lock: checked apart, the worker could take a queued job between the
        two checks and the cancel would find it in neither place and be lost.
        """
        with self._lock:
            current = self.current
            if job_id is None or (current is not None and current.job_id == job_id):
                if current is not None and current.kind == "job":
                    current.cancel.set()
                    return "running"
                return None
            for item in self._items:
                if item.job_id == job_id:
                    self._items.remove(item)
                    return "removed"
        return None

    def clear(self) -> list[_QueuedJob]:
        with self._lock:
            items = list(self._items)
            self._items.clear()
            return items

    def pending_ids(self) -> list[str]:
        with self._lock:
            return [item.job_id for item in self._items]


def chat_job(request: ChatRequest) -> Job:
    """The job that streams one ``ChatRequest`` (the chat, Quick Ask and document follow-ups)."""

    def job(engine: Optional[InferenceEngine], cancel: threading.Event) -> Iterator[object]:
        assert engine is not None  # submitted with needs_model: the worker checked
        return engine.stream(request, cancel)

    return job


def _default_engine_loader(
    path_or_repo: str, progress: Callable[..., None], *, draft: Optional[str] = None, mtp: bool = False,
) -> InferenceEngine:
    from app.paths import prompt_cache_dir
    from app.settings import Settings
    from mlx_backend.generation.engine import Engine  # imported on the worker thread: MLX stays off the GUI

    budget = Settings().prompt_cache_budget_bytes  # Settings > Prompt cache on disk; 0 = Off
    folder = prompt_cache_dir() if budget > 0 else None
    speed_up: dict[str, Any] = {"mtp": True} if mtp else {}  # only asked for: engines before MTP lack it
    return Engine.load(path_or_repo, progress=progress, draft=draft, disk_cache_folder=folder,
                       disk_cache_budget_bytes=budget, **speed_up)


def load_with_speed_up(
    loader: EngineLoader, model: str, progress: Callable[..., None], options: LoadOptions,
) -> tuple[InferenceEngine, str]:
    """Load ``model`` with its speed-up; if that fails, the model alone and a notice saying why.

    A draft folder that is no longer a model is found before the model loads (no second load);
    any other failure (another tokenizer, a hybrid target, memory) loads the model again alone.
    Raises only when the model itself can't load."""
    if not options:
        return loader(model, progress), ""
    reason = ""
    kwargs: dict[str, Any] = {"mtp": True}
    if options.draft:
        folder = local_model_folder(options.draft)  # never a download the user didn't ask for
        kwargs = {"draft": str(folder)}
        try:
            if folder is None:
                raise QwenDeskError(f"{options.draft_name} is no longer on this Mac.")
            validate_model_folder(folder)
        except QwenDeskError as error:
            reason = str(error)
    if not reason:
        try:
            return loader(model, progress, **kwargs), ""
        except Exception as error:  # noqa: BLE001 - the model alone may still load
            reason = _user_message(error)
            log.warning("loading %s with its speed-up failed: %s", model, reason)
    _release_memory()
    engine = loader(model, progress)
    return engine, f"{options.what()} could not be used, so the model runs without it. {reason}"


def _default_self_check() -> object:
    from mlx_backend.selfcheck import run_self_check  # on the worker thread, like the engine

    return run_self_check(require_gpu=True)


def platform_self_check() -> Optional[Callable[[], object]]:
    """The startup check for this platform: on macOS, MLX meets Metal (and its mlx.metallib)
    only at the first operation, so check then that a broken GPU setup is a message in the
    window, not a failed or stuck first answer. Elsewhere none (MLX runs on the CPU)."""
    return _default_self_check if sys.platform == "darwin" else None


def _release_memory() -> None:
    """Give the old model's buffers back before the next one loads (no-op without MLX)."""
    gc.collect()
    try:
        import mlx.core as mx

        clear = getattr(mx, "clear_cache", None) or getattr(getattr(mx, "metal", None), "clear_cache", None)
        if clear:
            clear()
    except Exception:  # noqa: BLE001 - freeing memory is best effort
        log.debug("could not clear the MLX cache", exc_info=True)


class Worker(QObject):
    """Runs queued jobs on its own thread. Never touch it from the GUI thread: use WorkerClient."""

    loadStarted = Signal(str)
    loadProgress = Signal(object)
    modelLoaded = Signal(object)
    modelLoadFailed = Signal(str)
    # The model loaded, but without the speed-up asked for: why (emitted before modelLoaded).
    loadNotice = Signal(str)
    selfCheckFailed = Signal(str)
    modelUnloaded = Signal()
    # Any queued item (job or load) is done; lets the client track "busy".
    settled = Signal(str)

    def __init__(
        self, queue: _JobQueue, engine_loader: EngineLoader, batch_interval_s: float,
        self_check: Optional[Callable[[], object]] = None,
    ) -> None:
        super().__init__()
        self._queue = queue
        self._load_engine = engine_loader
        self._batch_interval = batch_interval_s
        self._engine: Optional[InferenceEngine] = None
        self._self_check = self_check
        # Set when the startup self-check failed: every load and model job then fails with it.
        self._unusable: Optional[str] = None

    @Slot()
    def drain(self) -> None:
        """Run everything queued. Several wake-ups for one burst of submits find an empty queue."""
        while (item := self._queue.take()) is not None:
            try:
                if item.kind == "check":
                    self._check()
                elif item.kind == "load":
                    self._load(item)
                elif item.kind == "unload":
                    self._unload()
                else:
                    self._run(item)
            finally:
                self._queue.done()
                self.settled.emit(item.job_id)

    def _run(self, item: _QueuedJob) -> None:
        relay = item.relay
        assert relay is not None and item.run is not None
        relay.started.emit()
        batcher = EventBatcher(self._batch_interval)
        events: Optional[Iterator[object]] = None
        try:
            if item.needs_model and self._unusable:
                raise QwenDeskError(self._unusable)
            if item.needs_model and self._engine is None:
                raise QwenDeskError(NO_MODEL_MESSAGE)
            events = iter(item.run(self._engine, item.cancel))
            for event in events:
                for ready in batcher.feed(event):
                    relay.event.emit(ready)
            for ready in batcher.flush():
                relay.event.emit(ready)
        except Exception as error:  # noqa: BLE001 - every failure must reach the user, not kill the thread
            for ready in batcher.flush():
                relay.event.emit(ready)
            relay.failed.emit(_user_message(error))
        finally:
            close = getattr(events, "close", None)
            try:
                if close:
                    close()  # a generator stopped early releases its resources now
            except Exception:  # noqa: BLE001 - the window still needs its finished
                log.exception("closing job %s failed", item.job_id)
            relay.finished.emit()

    def _check(self) -> None:
        assert self._self_check is not None
        try:
            self._self_check()
        except Exception as error:  # noqa: BLE001 - any failure means models can't run here
            self._unusable = _user_message(error)
            log.error("startup self-check failed: %s", self._unusable)
            self.selfCheckFailed.emit(self._unusable)

    def _load(self, item: _QueuedJob) -> None:
        self.loadStarted.emit(item.model)
        if self._unusable:
            self.modelLoadFailed.emit(self._unusable)
            return
        self._engine = None  # one model at a time: free the old one before reading the new one
        _release_memory()
        last_emit = [0.0]

        def progress(*args: Any, **kwargs: Any) -> None:
            update = _load_progress(*args, **kwargs)
            now = time.monotonic()
            if now - last_emit[0] >= 0.05 or update.fraction == 1.0:
                last_emit[0] = now
                self.loadProgress.emit(update)

        try:
            if item.loader is not None:  # a load that brings its own engine (a remote group)
                engine, notice = item.loader(item.model, progress), None
            else:
                engine, notice = load_with_speed_up(self._load_engine, item.model, progress, item.speed_up)
        except Exception as error:  # noqa: BLE001
            self.modelLoadFailed.emit(_user_message(error))
            return
        if notice:
            self.loadNotice.emit(notice)
        self._engine = engine
        self.modelLoaded.emit(getattr(engine, "info", None))

    def _unload(self) -> None:
        self._engine = None
        _release_memory()
        self.modelUnloaded.emit()


class WorkerClient(QObject):
    """The GUI thread's handle on the worker; all its signals fire on the GUI thread."""

    loadStarted = Signal(str)
    loadProgress = Signal(object)
    modelLoaded = Signal(object)
    modelLoadFailed = Signal(str)
    loadNotice = Signal(str)
    # The startup self-check failed (macOS: MLX can't use the GPU); carries the user message.
    selfCheckFailed = Signal(str)
    modelUnloaded = Signal()
    # True while a job or a load runs or waits.
    busyChanged = Signal(bool)

    _wake = Signal()

    def __init__(
        self,
        engine_loader: EngineLoader = _default_engine_loader,
        *,
        batch_interval_s: float = DEFAULT_INTERVAL_S,
        self_check: Optional[Callable[[], object]] | Literal["platform"] = "platform",
        parent: Optional[QObject] = None,
    ) -> None:
        super().__init__(parent)
        if self_check == "platform":
            self_check = platform_self_check()
        self._queue = _JobQueue()
        self._thread = QThread()
        self._thread.setObjectName("inference-worker")
        self._worker = Worker(self._queue, engine_loader, batch_interval_s, self_check)
        self._worker.moveToThread(self._thread)
        self._thread.finished.connect(self._worker.deleteLater)
        queued = Qt.ConnectionType.QueuedConnection
        self._wake.connect(self._worker.drain, queued)
        # The client's own state first, then the same signal on to listeners (who read it).
        self._worker.loadStarted.connect(self._note_load_started, queued)
        self._worker.modelLoaded.connect(self._note_model_loaded, queued)
        self._worker.modelLoadFailed.connect(self._note_load_failed, queued)
        self._worker.loadStarted.connect(self.loadStarted, queued)
        self._worker.loadProgress.connect(self.loadProgress, queued)
        self._worker.modelLoaded.connect(self.modelLoaded, queued)
        self._worker.modelLoadFailed.connect(self.modelLoadFailed, queued)
        self._worker.loadNotice.connect(self.loadNotice, queued)
        self._worker.selfCheckFailed.connect(self.selfCheckFailed, queued)
        self._worker.modelUnloaded.connect(self._note_unloaded, queued)
        self._worker.modelUnloaded.connect(self.modelUnloaded, queued)
        self._worker.settled.connect(self._forget, queued)
        self._ids = itertools.count(1)
        # Everything queued or running; the handles stay alive until their job settles.
        self._outstanding: dict[str, Optional[JobHandle]] = {}
        self._model_info: object = None
        self._model_name = ""
        self._loading = ""
        self._speed_up = LoadOptions()
        self._thread.start()
        if self_check is not None:  # first in the queue, before any load or job; not "busy"
            self._queue.put(_QueuedJob(f"check-{next(self._ids)}", "check"))
            self._wake.emit()

    # ------------------------------------------------------------------ API
    def submit(self, job: Job, *, needs_model: bool = True, name: str = "job") -> JobHandle:
        """Queue ``job``; connect to the returned handle for its events."""
        job_id = f"{name}-{next(self._ids)}"
        handle = JobHandle(job_id, self._cancel)
        self._enqueue(_QueuedJob(job_id, "job", run=job, relay=handle.relay, needs_model=needs_model), handle)
        return handle

    def load_model(
        self,
        path_or_repo: str,
        speed_up: LoadOptions = LoadOptions(),
        loader: Optional[EngineLoader] = None,
    ) -> str:
        """Queue loading a model (after the jobs already queued); replaces the current one.

        ``speed_up``: a draft model or the MTP heads to load with it (``loadNotice`` if not).
        ``loader`` replaces the worker's own for this load, e.g. one that returns a
        ``RemoteEngine`` already connected to a group of Macs (``path_or_repo`` then names it)."""
        job_id = f"load-{next(self._ids)}"
        self._loading = path_or_repo
        self._speed_up = speed_up
        self._enqueue(
            _QueuedJob(job_id, "load", model=path_or_repo, speed_up=speed_up, loader=loader), None
        )
        return job_id

    def unload_model(self) -> str:
        """Queue freeing the loaded model (after the jobs already queued); ``modelUnloaded`` follows."""
        job_id = f"unload-{next(self._ids)}"
        self._enqueue(_QueuedJob(job_id, "unload"), None)
        return job_id

    def cancel_running(self) -> bool:
        """Stop whatever job runs now. True if one did."""
        return self._queue.cancel(None) is not None

    def cancel_all(self) -> None:
        for item in self._queue.clear():
            handle = self._outstanding.get(item.job_id)
            self._forget(item.job_id)
            if handle is not None:
                handle.finished.emit()
        self.cancel_running()

    def shutdown(self, timeout_ms: int = SHUTDOWN_TIMEOUT_MS) -> bool:
        """Cancel everything and stop the thread, waiting at most ``timeout_ms``.

        True once it has stopped. False: the running job ignored its cancel; the caller must
        then not let the QThread be destroyed (Qt aborts on a running one)."""
        if not self._thread.isRunning():
            return True
        self.cancel_all()
        self._thread.quit()
        return self._thread.wait(timeout_ms)

    @property
    def model_info(self) -> object:
        """``engine.info`` of the loaded model, or None."""
        return self._model_info

    @property
    def model_name(self) -> str:
        """What was passed to ``load_model`` for the loaded model."""
        return self._model_name

    @property
    def speed_up(self) -> LoadOptions:
        """The speed-up asked for with the last ``load_model`` (``loadNotice`` says if it failed)."""
        return self._speed_up

    @property
    def loading(self) -> str:
        """The model being loaded now, or ""."""
        return self._loading

    @property
    def current_job_id(self) -> Optional[str]:
        current = self._queue.current
        return current.job_id if current is not None and current.kind == "job" else None

    @property
    def pending_job_ids(self) -> list[str]:
        return self._queue.pending_ids()

    def is_busy(self) -> bool:
        return bool(self._outstanding)

    @property
    def worker_thread(self) -> QThread:
        return self._thread

    # ------------------------------------------------------------ internals
    def _cancel(self, job_id: str) -> bool:
        outcome = self._queue.cancel(job_id)
        if outcome == "removed":
            handle = self._outstanding.get(job_id)
            self._forget(job_id)
            if handle is not None:
                handle.finished.emit()  # it never started: finished is all it gets
        return outcome is not None

    def _enqueue(self, item: _QueuedJob, handle: Optional[JobHandle]) -> None:
        was_busy = self.is_busy()
        self._outstanding[item.job_id] = handle
        self._queue.put(item)
        if not was_busy:
            self.busyChanged.emit(True)
        self._wake.emit()

    @Slot(str)
    def _forget(self, job_id: str) -> None:
        was_busy = self.is_busy()
        self._outstanding.pop(job_id, None)
        if was_busy and not self.is_busy():
            self.busyChanged.emit(False)

    @Slot(str)
    def _note_load_started(self, model: str) -> None:
        self._model_info = None
        self._model_name = ""
        self._loading = model

    @Slot(object)
    def _note_model_loaded(self, info: object) -> None:
        self._model_info = info
        self._model_name, self._loading = self._loading, ""

    @Slot(str)
    def _note_load_failed(self, _message: str) -> None:
        self._loading = ""

    @Slot()
    def _note_unloaded(self) -> None:
        self._model_info = None
        self._model_name = ""


def _load_progress(*args: Any, **kwargs: Any) -> LoadProgress:
    """Accept the shapes loaders report: (done, total), (fraction,), (message,) or a dataclass."""
    if len(args) == 1 and not isinstance(args[0], (int, float, str)):
        obj = args[0]
        done, total = getattr(obj, "done", None), getattr(obj, "total", None)
        message = str(getattr(obj, "message", "") or getattr(obj, "stage", "") or "")
        if isinstance(done, (int, float)) and isinstance(total, (int, float)) and total > 0:
            return LoadProgress(min(1.0, done / total), message)
        fraction = getattr(obj, "fraction", None)
        return LoadProgress(float(fraction) if fraction is not None else None, message)
    numbers = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
    texts = [a for a in args if isinstance(a, str)] + [str(v) for v in kwargs.values() if isinstance(v, str)]
    message = texts[0] if texts else ""
    if len(numbers) >= 2:
        done, total = numbers[0], numbers[1]
        return LoadProgress(min(1.0, done / total) if total else None, message)
    if len(numbers) == 1 and 0.0 <= numbers[0] <= 1.0:
        return LoadProgress(float(numbers[0]), message)
    return LoadProgress(None, message)


def _user_message(error: BaseException) -> str:
    if isinstance(error, QwenDeskError):
        return str(error)
    log.error("unexpected error in the worker", exc_info=error)
    detail = str(error) or type(error).__name__
    return f"Something went wrong: {detail}"
