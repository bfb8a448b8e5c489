"""The one line the "Run on Several Macs" window shows about memory: what each Mac will hold.

``mlx_backend.memory.plan.plan_group`` does the sizing (the pipeline's split by layers); this
only turns "can't size this model" into an empty line instead of an error in the window.
"""

from __future__ import annotations

import logging
from typing import Any, Optional

log = logging.getLogger(__name__)


def group_plan_line(config_source: Any, hosts: int, budget_bytes: Optional[int] = None) -> str:
    """"On 2 Macs with 96.0 GB available each, ...: Mac 1: layers 0-46, 67.5 GB; ..." ("" when
    the model can't be sized)."""
    from mlx_backend.hub.catalog import PLANNING_CONTEXT_TOKENS
    from mlx_backend.memory.plan import plan_group, plan_memory

    try:
        if hosts <= 1:
            return plan_memory(config_source, PLANNING_CONTEXT_TOKENS, budget_bytes=budget_bytes).message
        return plan_group(config_source, hosts, PLANNING_CONTEXT_TOKENS, budget_bytes=budget_bytes).message
    except Exception:  # noqa: BLE001 - unknown architectures, unreadable configs
        log.info("could not size %s", config_source, exc_info=True)
        return ""
