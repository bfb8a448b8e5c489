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
import queue
import threading
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


class EngineBackend:
    """Runs requests on one engine, in one thread, in order: ``qwen-desk serve``."""

    def __init__(self, engine: Any, model_id: str) -> None:
        self._engine = engine
        self._model = ServedModel(model_id, engine.info)
        self._jobs: "queue.Queue[Optional[tuple[ChatRequest, Sink, threading.Event]]]" = queue.Queue()
        self._thread = threading.Thread(target=self._serve, name="server-engine", daemon=True)
        self._thread.start()

    def served_model(self) -> Optional[ServedModel]:
        return self._model

    def submit(self, request: ChatRequest, sink: Sink, *, client: str = "") -> Cancel:
        cancel = threading.Event()
        self._jobs.put((request, sink, cancel))
        return cancel.set

    def close(self) -> None:
        """Stop after the running request; queued ones end at once."""
        self._jobs.put(None)
        self._thread.join(timeout=10)

    def _serve(self) -> None:
        while (job := self._jobs.get()) is not None:
            request, sink, cancel = job
            try:
                if not cancel.is_set():  # a client that left while queued costs nothing
                    for event in run_request(self._engine, request, cancel):
                        sink(event)
            except QwenDeskError as error:
                sink(Failed(str(error)))
            except Exception as error:  # noqa: BLE001 - one bad request must not stop the server
                log.exception("request failed")
                sink(Failed(f"Something went wrong: {error}"))
            finally:
                sink(JobEnded())
        # Whatever was queued behind the close ends now.
        while True:
            try:
                job = self._jobs.get_nowait()
            except queue.Empty:
                return
            if job is not None:
                job[1](JobEnded())
