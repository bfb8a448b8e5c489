"""Book-keeping of one request: what its KV cache holds, what it produced, and its speeds."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable, Optional

from mlx_backend.events import GenerationStats
from mlx_backend.generation.prompt_cache import LayerCaches, Snapshots, take_snapshot
from mlx_backend.generation.speculative import SpeculationStats
from mlx_backend.memory.device import peak_memory_bytes
from mlx_backend.memory.sizes import GB


@dataclass
class RequestRun:
    """One request's cache and counters, updated as it prefills and decodes."""

    layers: LayerCaches
    held: list[int]  # token ids the layer caches hold, position by position
    reused: int
    started: float = field(default_factory=time.perf_counter)
    prefilled: int = 0
    first_token_at: Optional[float] = None
    last_token_at: Optional[float] = None
    generated: int = 0
    broken: bool = False  # the cache may not match ``held``: never store it
    # A hybrid cache's linear-layer states by position (see prompt_cache.py), and the positions
    # where this request wants one (turn boundaries); both stay empty for a trimmable cache.
    snapshots: Snapshots = field(default_factory=dict)
    boundaries: set[int] = field(default_factory=set)
    # Speculative decoding's counters, and the draft model's drafter (its cache goes back too).
    speculation: Optional[SpeculationStats] = None
    drafter: Optional[Any] = None

    def want_snapshots_at(self, positions: Iterable[int]) -> None:
        self.boundaries.update(p for p in positions if p > 0)
        self.snapshot_if_at_boundary()

    def snapshot_if_at_boundary(self) -> None:
        """Snapshot the layers if they now hold exactly a wanted boundary's tokens."""
        position = len(self.held)
        if position in self.boundaries and position not in self.snapshots:
            self.snapshots[position] = take_snapshot(self.layers)

    def stats(self, prompt_tokens: int) -> GenerationStats:
        prefill_end = self.first_token_at or time.perf_counter()
        prefill_time = max(prefill_end - self.started, 1e-9)
        decode_time = (self.last_token_at or prefill_end) - prefill_end
        return GenerationStats(
            prompt_tokens=prompt_tokens,
            cached_tokens=self.reused,
            generation_tokens=self.generated,
            ttft_s=(self.first_token_at - self.started) if self.first_token_at else 0.0,
            prompt_tps=self.prefilled / prefill_time,
            # Tokens after the first over the time they took (the first belongs to prefill).
            generation_tps=(
                (self.generated - 1) / decode_time if self.generated > 1 and decode_time > 0 else 0.0
            ),
            peak_memory_gb=peak_memory_bytes() / GB,
            **self._speculation_stats(),
        )

    def _speculation_stats(self) -> dict[str, Any]:
        spec = self.speculation
        if spec is None:
            return {}
        return dict(
            speculative=spec.kind,
            drafted_tokens=spec.drafted,
            accepted_tokens=spec.accepted,
            speculative_speedup=spec.speedup,
            speculative_fell_back=spec.fell_back,
        )
