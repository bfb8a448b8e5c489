"""Coalesce a token stream into fewer, larger events before they cross to the GUI thread.

A small model streams hundreds of tokens a second; one cross-thread signal per token would keep
the GUI busy repainting. Consecutive deltas of one kind are merged and released at most every
``interval_s`` (about 30 ms: still reads as smooth streaming), and never reordered: any other
event first releases what is pending. Prefill progress is never held back: it comes once per
prefill chunk (no flood), and the engine may well work for seconds before its next event, so a
held progress event would leave a stale bar on screen. A merged delta says how many engine deltas it holds
(about one per token), so the window can show a live tokens-per-second figure.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Optional

from mlx_backend.events import AnswerDelta, ThinkingDelta

DEFAULT_INTERVAL_S = 0.03


@dataclass(frozen=True)
class BatchedThinkingDelta(ThinkingDelta):
    count: int = 1  # engine deltas merged into this one


@dataclass(frozen=True)
class BatchedAnswerDelta(AnswerDelta):
    count: int = 1


_DELTA_TYPES = (ThinkingDelta, AnswerDelta)


def delta_count(event: object) -> int:
    """How many engine deltas ``event`` stands for (1 for one that was not batched)."""
    return getattr(event, "count", 1)


def _batched_kind(event: object) -> type:
    return BatchedThinkingDelta if isinstance(event, ThinkingDelta) else BatchedAnswerDelta


class EventBatcher:
    """Feed events in order; emit what ``feed``/``flush`` return, in order."""

    def __init__(self, interval_s: float = DEFAULT_INTERVAL_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval_s
        self._clock = clock
        self._pending_kind: Optional[type] = None
        self._pending_parts: list[str] = []
        self._pending_count = 0
        self._last_release = float("-inf")

    def feed(self, event: object) -> list[object]:
        if isinstance(event, _DELTA_TYPES):
            released: list[object] = []
            kind = _batched_kind(event)
            if self._pending_kind is not None and kind is not self._pending_kind:
                released = self.flush()  # a change of kind releases at once: order matters
            self._pending_kind = kind
            self._pending_parts.append(event.text)
            self._pending_count += delta_count(event)
            return released + self._release_if_due()
        return self.flush() + [event]

    def flush(self) -> list[object]:
        released = self._flush_deltas()
        if released:
            self._last_release = self._clock()
        return released

    def _release_if_due(self) -> list[object]:
        if self._clock() - self._last_release >= self._interval:
            return self.flush()
        return []

    def _flush_deltas(self) -> list[object]:
        if self._pending_kind is None:
            return []
        event = self._pending_kind("".join(self._pending_parts), self._pending_count)
        self._pending_kind, self._pending_parts, self._pending_count = None, [], 0
        return [event]
