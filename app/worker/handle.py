"""One submitted job's own signals, so each caller hears only its job (no filtering by id).

The worker thread emits on the job's ``JobRelay``; the relay is connected signal to signal,
queued, to the ``JobHandle``, a GUI-thread QObject. Whatever a caller connects to the handle
therefore runs on the GUI thread, in the order the job produced it.

Per job the handle emits ``started``, ``event(object)`` for each (batched) event, ``failed(str)``
if it raised, and always ``finished`` last. A job cancelled before it started gets only
``finished``.
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QObject, Qt, Signal


class JobRelay(QObject):
    """Emitted from the worker thread; never connect to it directly, use the handle."""

    started = Signal()
    event = Signal(object)
    failed = Signal(str)
    finished = Signal()


class JobHandle(QObject):
    """A submitted job as the GUI thread sees it."""

    started = Signal()
    event = Signal(object)
    failed = Signal(str)
    finished = Signal()

    def __init__(self, job_id: str, canceller: Callable[[str], bool]) -> None:
        super().__init__()
        self.job_id = job_id
        self._canceller = canceller
        self.relay = JobRelay()
        queued = Qt.ConnectionType.QueuedConnection
        self.relay.started.connect(self.started, queued)
        self.relay.event.connect(self.event, queued)
        self.relay.failed.connect(self.failed, queued)
        self.relay.finished.connect(self.finished, queued)

    def cancel(self) -> bool:
        """Stop the job, running or queued. True if it was still there to stop."""
        return self._canceller(self.job_id)

    def __repr__(self) -> str:
        return f"JobHandle({self.job_id!r})"
