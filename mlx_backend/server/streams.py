"""From a backend's thread-side sink to an async iterator a route handler can ``async for``.

Leaving the iteration early - a client that disconnected, an exception in the handler - cancels
the request in the backend: the engine checks its cancel event after every token, and a job
still queued is dropped without running.
"""

from __future__ import annotations

import asyncio
from typing import AsyncIterator, Awaitable, Callable, Optional

from mlx_backend.events import ChatRequest
from mlx_backend.server.backend import Cancel, GenerationBackend, JobEnded, Sink


async def request_events(backend: GenerationBackend, request: ChatRequest, *, client: str = "") -> AsyncIterator[object]:
    """Yield the request's events (``Rejected`` first and only, if it was refused)."""
    async for item in sink_events(lambda sink: backend.submit(request, sink, client=client)):
        yield item


async def count_events(backend: GenerationBackend, request: ChatRequest) -> AsyncIterator[object]:
    """Yield the answer to counting ``request``'s prompt: ``TokenCount`` or ``Rejected``."""
    async for item in sink_events(lambda sink: backend.count_tokens(request, sink)):
        yield item


async def sink_events(start: Callable[[Sink], Cancel]) -> AsyncIterator[object]:
    """What ``start`` sends its sink (from any thread), up to ``JobEnded``; leaving cancels."""
    loop = asyncio.get_running_loop()
    items: "asyncio.Queue[object]" = asyncio.Queue()

    def sink(item: object) -> None:
        try:
            loop.call_soon_threadsafe(items.put_nowait, item)
        except RuntimeError:  # the loop closed (server shutting down): nobody is listening
            pass

    cancel = start(sink)
    ended = False
    try:
        while True:
            item = await items.get()
            if isinstance(item, JobEnded):
                ended = True
                return
            yield item
    finally:
        if not ended:
            cancel()


# The first event is awaited while the job may still wait its turn: a client that leaves in that
# time is noticed within this long, so its job is dropped before it ever runs.
QUEUED_POLL_S = 0.1


class ClientGone:
    """``first_event``'s answer when the client disconnected before the first event came."""


CLIENT_GONE = ClientGone()


async def first_event(
    events: AsyncIterator[object], is_disconnected: Callable[[], Awaitable[bool]], poll_s: float = QUEUED_POLL_S
) -> Optional[object]:
    """The first event of ``events`` (None if it ended without one), or ``CLIENT_GONE``.

    Nothing is sent to the client until this event (so a refused request can still get an HTTP
    error), which means no write would notice a disconnect: ``is_disconnected`` is polled
    instead. When the client is gone the iteration is closed, which cancels the job.
    """
    task = asyncio.ensure_future(anext(events, None))
    try:
        while True:
            done, _ = await asyncio.wait({task}, timeout=poll_s)
            if done:
                return task.result()
            if await is_disconnected():
                return CLIENT_GONE
    finally:
        if not task.done():
            task.cancel()  # raised inside request_events, whose finally cancels the job
            await asyncio.gather(task, return_exceptions=True)
            await events.aclose()


# Drains still running after their answer went out (see finish_in_background).
_draining: set[asyncio.Task] = set()


def finish_in_background(events: AsyncIterator[object]) -> None:
    """Let a job run to its end after the answer is out.

    After ``Finished`` the engine re-encodes the reply for the next turn's cache; leaving the
    iteration would cancel that (an agent's next turn would prefill the reply again), so the
    rest is drained by a task of its own.
    """
    async def drain() -> None:
        async for _event in events:
            pass

    task = asyncio.get_running_loop().create_task(drain())
    _draining.add(task)
    task.add_done_callback(_draining.discard)
