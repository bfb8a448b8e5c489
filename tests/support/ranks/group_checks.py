"""Each rank reports what the group's broadcasts gave it (tests/test_distributed_group.py)."""

import json

import mlx.core as mx

from mlx_backend.distributed.group import GroupCancel, RankGroup, leader_sampler

group = RankGroup.from_environment()
payload = "{\"question\": \"w\u00f6rld \u4f60\u597d\"}".encode() if group.is_leader else None
received = group.broadcast_bytes(payload)
empty = group.broadcast_bytes(b"" if group.is_leader else None)
# Every rank "samples" its own rank number: only rank 0's may come out.
sampler = leader_sampler(lambda logprobs: mx.array([group.rank + 7], mx.int32), group)
token = sampler(mx.zeros((1, 4))).item()
cancel = GroupCancel(group)
if group.rank == group.size - 1:
    cancel.set()  # the last rank alone is told to stop
stops = [cancel.is_set(), GroupCancel(group).is_set()]
print(json.dumps({
    "rank": group.rank, "size": group.size, "received": received.decode(),
    "empty": empty.decode(), "token": token, "stops": stops,
}), flush=True)
