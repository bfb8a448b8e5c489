"""Which layers each pipeline stage holds: contiguous runs, as even as the count allows.

The planner (``memory.plan.plan_group``) sizes each Mac's share from this split and the
pipeline (``distributed.pipeline``) loads it, so the two always agree.
"""

from __future__ import annotations


def stage_layers(num_layers: int, stages: int) -> list[range]:
    """The layer indices of each stage, earlier stages taking one more when they don't divide."""
    if stages < 1:
        raise ValueError(f"a pipeline needs at least one stage, not {stages}")
    if num_layers < stages:
        raise ValueError(f"{num_layers} layers can't be split into {stages} stages")
    base, extra = divmod(num_layers, stages)
    ranges, start = [], 0
    for stage in range(stages):
        end = start + base + (1 if stage < extra else 0)
        ranges.append(range(start, end))
        start = end
    return ranges
