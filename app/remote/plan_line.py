"""The one line the "Run on Several Macs" window shows about memory: what the model needs and
what each Mac will hold.

The multi-Mac planner (``mlx_backend.memory.plan``'s ``plan_group``) says it best; until it is
there, an even split of this Mac's single-machine estimate by layers stands in.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

log = logging.getLogger(__name__)
GB = 1e9


def group_plan_line(config_source: Any, hosts: int, budget_bytes: Optional[int] = None) -> str:
    """"Needs about 132 GB: about 66 GB on each of 2 Macs." ("" when the model can't be sized)."""
    from mlx_backend.hub.catalog import PLANNING_CONTEXT_TOKENS

    try:
        from mlx_backend.memory.plan import plan_group  # type: ignore[attr-defined]
    except ImportError:
        plan_group = None
    if plan_group is not None:
        try:
            return str(plan_group(config_source, hosts=hosts, context_tokens=PLANNING_CONTEXT_TOKENS).message)
        except Exception:  # noqa: BLE001 - an estimate below still helps
            log.warning("the group planner could not plan this model", exc_info=True)
    from mlx_backend.memory.plan import plan_memory

    try:
        plan = plan_memory(config_source, PLANNING_CONTEXT_TOKENS, budget_bytes=budget_bytes)
    except Exception:  # noqa: BLE001 - unknown architectures, unreadable configs
        log.info("could not size %s", config_source, exc_info=True)
        return ""
    total = plan.total_bytes
    needs = f"Needs about {_gb(total)} with a {PLANNING_CONTEXT_TOKENS:,}-token conversation"
    if hosts <= 1:
        return needs + "."
    # Split by layers, each Mac holds its layers' weights and their KV cache, and works on its own.
    each = (plan.weights_bytes + plan.kv_cache_bytes + plan.linear_state_bytes) / hosts + plan.overhead_bytes
    return f"{needs}: about {_gb(each)} on each of {hosts} Macs."


def _gb(n: float) -> str:
    return f"{n / GB:.0f} GB" if n >= 10 * GB else f"{n / GB:.1f} GB"
