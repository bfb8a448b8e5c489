"""Stop strings in streamed text: cut the answer before the first one, whatever the chunking."""

from __future__ import annotations

from typing import Sequence

from mlx_backend.text.thinking import partial_suffix_length

MAX_STOP_SEQUENCES = 16


class StopSequences:
    """Find stop strings in streamed text, holding back a tail that may begin one."""

    def __init__(self, stops: Sequence[str]):
        self._stops = tuple(stops)
        self._pending = ""

    def feed(self, text: str) -> tuple[str, bool]:
        """Text safe to show now, and whether a stop string was reached (text before it only)."""
        if not self._stops:
            return text, False
        buffer = self._pending + text
        hits = [i for i in (buffer.find(stop) for stop in self._stops) if i >= 0]
        if hits:
            self._pending = ""
            return buffer[: min(hits)], True
        hold = max(partial_suffix_length(buffer, stop) for stop in self._stops)
        self._pending = buffer[len(buffer) - hold :]
        return buffer[: len(buffer) - hold], False

    def flush(self) -> str:
        text, self._pending = self._pending, ""
        return text
