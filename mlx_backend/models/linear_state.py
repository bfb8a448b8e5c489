"""The cache of a linear-attention (Gated DeltaNet) layer, with an offset and snapshots.

mlx-lm keeps a linear layer's conv window and recurrent state in an ``ArraysCache``, which
knows neither how many positions it has consumed nor how to go back: the state folds every
token in, so it cannot be trimmed like a KV cache. This subclass counts positions (so a hybrid
model's cache can be checked layer by layer like a KV cache) and hands out snapshots: MLX
arrays are immutable and every step replaces the state arrays, so a snapshot is a pair of
references, free to take, and restoring one rewinds the layer exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import mlx.core as mx
from mlx_lm.models.cache import ArraysCache


@dataclass(frozen=True)
class LinearStateSnapshot:
    offset: int
    arrays: tuple[Optional[mx.array], ...]

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays if a is not None)


class LinearStateCache(ArraysCache):
    def __init__(self, size: int = 2):
        super().__init__(size)
        self.offset = 0

    def advance(self, n: int) -> None:
        super().advance(n)
        self.offset += n

    def snapshot(self) -> LinearStateSnapshot:
        return LinearStateSnapshot(self.offset, tuple(self.cache))

    def restore(self, snapshot: LinearStateSnapshot) -> None:
        self.cache = list(snapshot.arrays)
        self.offset = snapshot.offset
