"""The group of processes that runs one model together (``mlx.launch``), on MLX's own transport.

Every rank runs the same engine code on the same request, in the same order: the model's
forward pass exchanges hidden states between the ranks (pipeline stages, tensor-parallel
layers), and the few decisions that must not differ between ranks are made once, on rank 0
(the leader), and broadcast:

- the sampled token (``leader_sampler``): rank 0 samples, every rank continues with its token;
- whether to go on (``GroupCancel``): a cancel seen on any rank stops every rank at the same
  token, because each check is one collective that every rank makes at the same point;
- the request itself, for ranks that don't read it themselves (``broadcast_bytes``).

A broadcast is an ``all_sum`` where only the leader contributes (the others add zeros), which
needs nothing from the backend beyond what every MLX backend has (ring, JACCL, MPI).
A group of one (no ``mlx.launch``) is the ordinary single process: every method is then free.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Optional

import mlx.core as mx
from mlx_lm.sample_utils import Sampler

LEADER = 0


@dataclass(frozen=True)
class RankGroup:
    """This process's place in the group (``group`` is None for a single process)."""

    group: Optional[mx.distributed.Group] = None

    @classmethod
    def from_environment(cls) -> "RankGroup":
        """The group ``mlx.launch`` started this process in, or a group of one."""
        if not mx.distributed.is_available():
            return cls(None)
        group = mx.distributed.init(strict=False)
        return cls(group if group.size() > 1 else None)

    @property
    def rank(self) -> int:
        return self.group.rank() if self.group is not None else 0

    @property
    def size(self) -> int:
        return self.group.size() if self.group is not None else 1

    @property
    def is_leader(self) -> bool:
        return self.rank == LEADER

    @property
    def is_distributed(self) -> bool:
        return self.group is not None

    def from_leader(self, value: mx.array) -> mx.array:
        """Rank 0's ``value`` on every rank (lazy, like any MLX operation)."""
        if self.group is None:
            return value
        mine = value if self.is_leader else mx.zeros_like(value)
        return mx.distributed.all_sum(mine, group=self.group)

    def any_rank(self, flag: bool) -> bool:
        """True on every rank if ``flag`` is true on any of them (a blocking collective)."""
        if self.group is None:
            return flag
        total = mx.distributed.all_sum(mx.array([1 if flag else 0], mx.int32), group=self.group)
        return bool(total.item())

    def broadcast_bytes(self, payload: Optional[bytes]) -> bytes:
        """The leader's ``payload`` on every rank (the others pass None): length, then bytes."""
        if self.group is None:
            return payload or b""
        data = (payload or b"") if self.is_leader else b""
        length = int(self.from_leader(mx.array([len(data)], mx.int64)).item())
        if length == 0:
            return b""
        mine = (
            mx.array(memoryview(data), mx.uint8) if self.is_leader else mx.zeros((length,), mx.uint8)
        )
        # uint8 sums can't overflow here: every rank but the leader adds zeros.
        return bytes(memoryview(mx.distributed.all_sum(mine, group=self.group)))


def leader_sampler(sampler: Sampler, group: RankGroup) -> Sampler:
    """``sampler`` run on rank 0, its tokens handed to every rank (samplers draw random numbers:
    the ranks' generators need not agree, and then only rank 0's draw counts)."""
    if not group.is_distributed:
        return sampler

    def sample(logprobs: mx.array) -> mx.array:
        return group.from_leader(sampler(logprobs))

    return sample


class GroupCancel:
    """A cancel flag that every rank reads together: ``is_set`` is a collective, true on all
    ranks when any rank's local event is set (rank 0's, by a client or the user)."""

    def __init__(self, group: RankGroup, local: Optional[threading.Event] = None):
        self.group = group
        self.local = local or threading.Event()

    def set(self) -> None:
        self.local.set()

    def is_set(self) -> bool:
        return self.group.any_rank(self.local.is_set())
