"""Prefill: run the model over prompt tokens in chunks sized by time, filling the KV cache.

mlx-lm's ``generate_step`` prefills in fixed 2,048-token chunks, which on a slow machine (or a
big model) means tens of seconds before a Stop takes effect or the first progress appears. Here
each chunk is sized from the measured speed of the one before to take about
``target_chunk_s``, starting small so the first measurement (and the first ETA) comes fast.

Each chunk does what ``generate_step``'s own prefill does: the model call, KV quantization when
asked (``maybe_quantize_kv_cache`` from the first position, as the memory plan assumes), an
evaluation of every layer's cache state and ``mx.clear_cache()``. The caller hands the final
prompt token to ``generate_step``, which then produces the first logits from the filled cache.

A chunk also ends at each of the caller's ``stops``: a hybrid model's linear layers can only be
snapshotted between model calls, so the state at a turn boundary exists only if a chunk ends
there. Without stops the chunks are exactly as before.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Iterator, Optional, Sequence

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.generate import generation_stream, maybe_quantize_kv_cache

from mlx_backend.generation.prompt_cache import LayerCaches
from mlx_backend.models.limits import KV_GROUP_SIZE

# How much faster than the last chunk the next may be sized: a small chunk's timing is noisy
# (fixed overheads), and one wrong guess must not make a chunk that ignores Stop for long.
_MAX_GROWTH = 4


@dataclass(frozen=True)
class PrefillPolicy:
    """How big prefill chunks are: about ``target_chunk_s`` each, within the token bounds."""

    target_chunk_s: float = 0.25
    first_chunk_tokens: int = 32
    min_chunk_tokens: int = 16
    # Bounds the activations of one model call (mlx-lm's fixed chunk is 2,048).
    max_chunk_tokens: int = 4096

    def __post_init__(self) -> None:
        if not (1 <= self.min_chunk_tokens <= self.first_chunk_tokens <= self.max_chunk_tokens):
            raise ValueError("prefill chunk bounds must satisfy 1 <= min <= first <= max")
        if not self.target_chunk_s > 0:
            raise ValueError("the prefill chunk target must be a positive number of seconds")

    @classmethod
    def fixed(cls, tokens: int) -> "PrefillPolicy":
        """Chunks of exactly ``tokens`` (the last one shorter): predictable, for tests and benches."""
        return cls(first_chunk_tokens=tokens, min_chunk_tokens=tokens, max_chunk_tokens=tokens)

    def next_chunk_tokens(self, last_tokens: int, last_seconds: float) -> int:
        """The size that should take ``target_chunk_s`` at the speed the last chunk ran."""
        if last_seconds <= 0:
            wanted = last_tokens * _MAX_GROWTH
        else:
            wanted = int(last_tokens / last_seconds * self.target_chunk_s)
        wanted = min(wanted, last_tokens * _MAX_GROWTH)
        return max(self.min_chunk_tokens, min(self.max_chunk_tokens, wanted))


@dataclass(frozen=True)
class PrefillChunk:
    """One chunk now in the cache, and where the prefill stands."""

    tokens: list[int]  # the ids this chunk added to the cache
    done: int  # tokens of this prefill in the cache so far
    total: int
    seconds: float  # the chunk's model call and evaluation
    eta_s: float  # the rest at this chunk's speed


def prefill(
    model: nn.Module,
    layers: LayerCaches,
    tokens: Sequence[int],
    policy: PrefillPolicy,
    cancel: threading.Event,
    *,
    kv_bits: Optional[int] = None,
    stops: Sequence[int] = (),
) -> Iterator[PrefillChunk]:
    """Run ``model`` over ``tokens`` into ``layers``, yielding after every chunk.

    ``cancel`` is checked before each chunk; once it is set no further chunk starts and the
    generator ends, the cache holding exactly the chunks yielded so far. ``layers`` is updated
    in place (quantization replaces its entries, as in mlx-lm). No chunk spans a position in
    ``stops`` (counted in ``tokens``): one ends there.
    """
    total = len(tokens)
    stops = sorted(stop for stop in set(stops) if 0 < stop < total)
    done = 0
    size = policy.first_chunk_tokens
    while done < total and not cancel.is_set():
        end = min(done + size, next((stop for stop in stops if stop > done), total))
        chunk = list(tokens[done:end])
        started = time.perf_counter()
        with mx.stream(generation_stream):
            # Only the keys and values are needed; the logits are never evaluated.
            model(mx.array(chunk)[None], cache=layers)
            maybe_quantize_kv_cache(
                layers, quantized_kv_start=0, kv_group_size=KV_GROUP_SIZE, kv_bits=kv_bits
            )
            mx.eval([layer.state for layer in layers])
        seconds = time.perf_counter() - started
        mx.clear_cache()
        done += len(chunk)
        speed = len(chunk) / seconds if seconds > 0 else float("inf")
        yield PrefillChunk(chunk, done, total, seconds, (total - done) / speed)
        if len(chunk) == size:  # one cut short by a stop is too small to time the next by
            size = policy.next_chunk_tokens(len(chunk), seconds)
