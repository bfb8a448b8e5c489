"""What this machine lets MLX use: the memory budget, peak-memory readings, the wired limit.

The budget is what MLX may keep resident: on Apple Silicon Metal's recommended working set
(the GPU can't page beyond it without a big slowdown), elsewhere a share of physical memory.
Every Metal-only call is guarded so the same code runs on Linux's CPU backend.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import Iterator, Optional, Union

import mlx.core as mx

# Without Metal's recommendation, leave a quarter of physical memory to the OS and other apps.
NON_METAL_BUDGET_FRACTION = 0.75


@dataclass(frozen=True)
class MemoryBudget:
    bytes: int
    source: str  # where the figure comes from, shown in messages


def _device_info() -> dict[str, Union[str, int]]:
    try:
        return dict(mx.device_info())
    except Exception:  # older MLX or a backend without device queries
        return {}


def _recommended_working_set() -> Optional[int]:
    recommended = _device_info().get("max_recommended_working_set_size")
    return int(recommended) if recommended else None


def physical_memory_bytes() -> Optional[int]:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def memory_budget() -> MemoryBudget:
    """How much memory MLX should plan to use on this machine."""
    recommended = _recommended_working_set()
    if recommended:
        return MemoryBudget(recommended, "the GPU's recommended working set")
    physical = physical_memory_bytes()
    if physical:
        return MemoryBudget(int(physical * NON_METAL_BUDGET_FRACTION), "75% of physical memory")
    return MemoryBudget(0, "unknown")


def reset_peak_memory() -> None:
    with contextlib.suppress(Exception):
        mx.reset_peak_memory()


def peak_memory_bytes() -> int:
    """Highest MLX allocation since the last reset (0 where the backend can't tell)."""
    try:
        return int(mx.get_peak_memory())
    except Exception:
        return 0


@contextlib.contextmanager
def wired_limit(streams: tuple[mx.Stream, ...] = ()) -> Iterator[None]:
    """Let Metal wire up to its recommended working set while generating, like mlx-lm does.

    Wired memory can't be paged out, so weights stay resident between tokens. A no-op where
    the device reports no recommended size (CPU backend, Linux).
    """
    recommended = _recommended_working_set()
    if not recommended:
        yield
        return
    try:
        previous = mx.set_wired_limit(recommended)
    except Exception:
        yield
        return
    try:
        yield
    finally:
        # The limit must not change under an in-flight asynchronous evaluation.
        with contextlib.suppress(Exception):
            for stream in streams:
                mx.synchronize(stream)
            if not streams:
                mx.synchronize()
        with contextlib.suppress(Exception):
            mx.set_wired_limit(previous)
