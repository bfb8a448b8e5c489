"""The two seams of the worker, as small Protocols instead of ``Any``.

``InferenceEngine`` is what the worker and its jobs use of an engine (the real one is
``mlx_backend.generation.engine.Engine``; tests pass fakes). ``JobRunner`` is what the
controllers use of the ``WorkerClient``: submit a job, get its handle, read the loaded model.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Callable, Iterable, Iterator, Optional, Protocol

if TYPE_CHECKING:
    from app.worker.handle import JobHandle
    from mlx_backend.events import ChatRequest


class InferenceEngine(Protocol):
    """The loaded model, as jobs see it on the worker thread."""

    info: object

    def stream(self, request: "ChatRequest", cancel: threading.Event) -> Iterator[object]: ...


# A unit of work for the worker thread: ``job(engine, cancel)`` yields events. ``engine`` is
# None for a job submitted with ``needs_model=False`` while no model is loaded.
Job = Callable[[Optional[InferenceEngine], threading.Event], Iterable[object]]


class JobRunner(Protocol):
    """What a controller needs of the worker client."""

    def submit(self, job: Job, *, needs_model: bool = True, name: str = "job") -> "JobHandle": ...

    @property
    def model_info(self) -> object: ...

    @property
    def model_name(self) -> str: ...

    @property
    def loading(self) -> str: ...
