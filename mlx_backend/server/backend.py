"""What the server needs of whoever runs the model, and the headless runner.

A ``GenerationBackend`` takes a ``ChatRequest`` and a thread-safe ``sink``; it calls the sink
with each event of the request's stream (from any thread) and then once with ``JobEnded``. A
request the engine refuses before any work (malformed, too long for the context, no model)
ends with ``Rejected`` instead of events, so the server can answer with an HTTP error rather
than a broken stream. ``submit`` returns a cancel function, safe to call from any thread, at
any time, more than once.

Requests run one at a time, first come first served, as the worker does for the window: no
client (nor the window) can starve another forever.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Protocol

from mlx_backend.errors import ContextOverflowError, QwenDeskError, RequestError
from mlx_backend.events import ChatRequest, Failed

log = logging.getLogger(__name__)

Sink = Callable[[object], None]
Cancel = Callable[[], None]


@dataclass(frozen=True)
class Rejected:
    """The request was refused before any work; ``status`` is the HTTP status to answer with."""

    message: str
    status: int = 400
    kind: str = "invalid_request"  # "invalid_request", "context_length_exceeded", "no_model", "busy"


@dataclass(frozen=True)
class TokenCount:
    """The answer to a count request: how many tokens the rendered prompt is."""

    tokens: int


@dataclass(frozen=True)
class JobEnded:
    """The last thing a sink receives for a request, whatever happened."""


@dataclass(frozen=True)
class ServedModel:
    """The model a backend serves: its id (what clients pass as ``model``) and EngineInfo."""

    id: str
    info: Any  # mlx_backend.generation.engine.EngineInfo (Any: this module never imports MLX)


class GenerationBackend(Protocol):
    def served_model(self) -> Optional[ServedModel]:
        """The loaded model, or None while none is (or while one loads)."""

    def submit(self, request: ChatRequest, sink: Sink, *, client: str = "") -> Cancel:
        """Queue ``request``; its events go to ``sink``. ``client`` names the caller for the UI."""

    def count_tokens(self, request: ChatRequest, sink: Sink) -> Cancel:
        """Render ``request``'s prompt as a generation would; ``sink`` gets ``TokenCount`` (or
        ``Rejected``), then ``JobEnded``."""


def run_request(engine: Any, request: ChatRequest, cancel: threading.Event) -> Iterator[object]:
    """One request's events from ``engine``, the refusal of a bad request as ``Rejected``.

    ``engine.stream`` validates and renders the prompt before returning its iterator, so a
    refused request costs no model work and yields only the one ``Rejected``.
    """
    try:
        events = engine.stream(request, cancel)
    except ContextOverflowError as error:
        yield Rejected(str(error), 400, "context_length_exceeded")
        return
    except RequestError as error:
        yield Rejected(str(error), 400, "invalid_request")
        return
    yield from events


def count_request(engine: Any, request: ChatRequest) -> Iterator[object]:
    """The prompt's length as ``engine.stream`` renders it (the same renderer and checks, no model
    work), or ``Rejected``. A prompt too long for the context is counted all the same: knowing
    by how much it is too long is the point of asking.
    """
    from mlx_backend.generation.request import PromptRenderer, validate_request  # no MLX in it

    try:
        validate_request(request)
        renderer = PromptRenderer(engine.tokenizer)
        prompt = renderer.prompt(request, renderer.thinking_for(request))
    except RequestError as error:
        yield Rejected(str(error), 400, "invalid_request")
        return
    yield TokenCount(len(prompt))


class _Job:
    def __init__(self, request: ChatRequest, sink: Sink) -> None:
        self.request = request
        self.sink = sink
        self.cancel = threading.Event()


class EngineBackend:
    """Runs requests on one engine, in one thread, in order: ``qwen-desk serve``."""

    def __init__(self, engine: Any, model_id: str) -> None:
        self._engine = engine
        self._model = ServedModel(model_id, engine.info)
        # Waiting jobs; a cancelled one is taken out at once (its client left: it never runs).
        self._queue: "deque[_Job]" = deque()
        self._ready = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._serve, name="server-engine", daemon=True)
        self._thread.start()

    def served_model(self) -> Optional[ServedModel]:
        return self._model

    def submit(self, request: ChatRequest, sink: Sink, *, client: str = "") -> Cancel:
        job = _Job(request, sink)
        with self._ready:
            if self._closing:
                job = None
            else:
                self._queue.append(job)
                self._ready.notify()
        if job is None:
            sink(Rejected("The server is stopping.", 503, "busy"))
            sink(JobEnded())
            return lambda: None

        def cancel() -> None:
            job.cancel.set()  # running: the engine stops within a token
            with self._ready:
                try:
                    self._queue.remove(job)
                except ValueError:
                    return  # running or done: its own end follows
            job.sink(JobEnded())

        return cancel

    def count_tokens(self, request: ChatRequest, sink: Sink) -> Cancel:
        # Rendering reads only the tokenizer and the template, never the model or its caches,
        # so it needn't wait behind a running generation: a thread of its own.
        def count() -> None:
            try:
                for item in count_request(self._engine, request):
                    sink(item)
            except Exception as error:  # noqa: BLE001
                log.exception("counting failed")
                sink(Failed(f"Something went wrong: {error}"))
            finally:
                sink(JobEnded())

        threading.Thread(target=count, name="server-count", daemon=True).start()
        return lambda: None

    def pending(self) -> int:
        """How many requests wait behind the running one."""
        with self._ready:
            return len(self._queue)

    def close(self) -> None:
        """Stop after the running request; queued ones end at once."""
        with self._ready:
            self._closing = True
            left = list(self._queue)
            self._queue.clear()
            self._ready.notify()
        for job in left:
            job.sink(JobEnded())
        self._thread.join(timeout=10)

    def _next(self) -> Optional[_Job]:
        with self._ready:
            while not self._queue and not self._closing:
                self._ready.wait()
            return self._queue.popleft() if self._queue else None

    def _serve(self) -> None:
        while (job := self._next()) is not None:
            try:
                if not job.cancel.is_set():
                    for event in run_request(self._engine, job.request, job.cancel):
                        job.sink(event)
            except QwenDeskError as error:
                job.sink(Failed(str(error)))
            except Exception as error:  # noqa: BLE001 - one bad request must not stop the server
                log.exception("request failed")
                job.sink(Failed(f"Something went wrong: {error}"))
            finally:
                job.sink(JobEnded())
