"""How far a model can attend and how its KV cache can be stored: one home for these rules.

The engine enforces them, the summary planner plans with them and the memory planner sizes
caches with them, so a document plan never promises what the engine would refuse.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

# KV-cache quantization groups (mlx-lm's default): head_dim must be a multiple of it.
KV_GROUP_SIZE = 64
# YaRN factors Qwen documents: 4 is its long-context setting; above 8 quality falls apart.
DEFAULT_YARN_FACTOR = 4.0
MAX_YARN_FACTOR = 8.0
# Qwen3 (hybrid) configs allow 40,960 positions, but the model card's native context, which
# YaRN's factor multiplies, is 32,768 (Qwen's own rope_scaling example uses exactly that).
QWEN3_NATIVE_CONTEXT = {40960: 32768}


def yarn_original_context(max_positions: int, rope_scaling: Optional[Mapping[str, Any]]) -> int:
    """The pre-training window that a YaRN factor multiplies."""
    if rope_scaling and rope_scaling.get("original_max_position_embeddings"):
        return int(rope_scaling["original_max_position_embeddings"])
    return QWEN3_NATIVE_CONTEXT.get(int(max_positions), int(max_positions))


def context_window(
    max_positions: int,
    rope_scaling: Optional[Mapping[str, Any]],
    yarn_factor: Optional[float] = None,
) -> int:
    """Tokens a model attends over, from its config's values: by its own rope (which may
    already be YaRN), or with YaRN at ``yarn_factor``."""
    if yarn_factor is None:
        if rope_scaling and rope_scaling.get("rope_type") == "yarn" and rope_scaling.get("factor"):
            yarn_factor = float(rope_scaling["factor"])
        else:
            return int(max_positions)
    return int(yarn_original_context(max_positions, rope_scaling) * yarn_factor)


def kv_quantizable(head_dim: int) -> bool:
    """Can this model's keys and values be quantized in KV_GROUP_SIZE groups?"""
    return head_dim % KV_GROUP_SIZE == 0
