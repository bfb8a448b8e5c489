"""Qwen3-Next (``qwen3_next``, e.g. Qwen3-Next-80B-A3B): mlx-lm's model.

The hybrid layout of Qwen3.5 with the Qwen3 vocabulary and a sparse MoE in every layer. mlx-lm
reads the per-expert layout; a fused checkpoint is split into it first (see ``hybrid.py``).
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
from mlx_lm.models import qwen3_next as mlx_qwen3_next

from mlx_backend.models.hybrid import (
    HybridModel,
    check_per_expert_weights,
    split_fused_expert_weights,
)


def lift_rope_parameters(params: dict[str, Any]) -> dict[str, Any]:
    """transformers >= 5 writes rope_theta and partial_rotary_factor inside rope_parameters;
    mlx-lm's ModelArgs wants them (required) at the top level."""
    rope = params.get("rope_parameters") or {}
    lifted = {k: rope[k] for k in ("rope_theta", "partial_rotary_factor") if k in rope}
    params = {**lifted, **{k: v for k, v in params.items() if v is not None}}
    if rope and not params.get("rope_scaling"):
        params["rope_scaling"] = rope
    return params


class ModelArgs(mlx_qwen3_next.ModelArgs):
    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> "ModelArgs":
        return super().from_dict(lift_rope_parameters(params))


class Model(HybridModel, mlx_qwen3_next.Model):
    def sanitize(self, weights: dict[str, mx.array]) -> dict[str, mx.array]:
        weights = split_fused_expert_weights(weights)
        check_per_expert_weights(weights, self.args.num_experts)  # mlx-lm would KeyError
        return super().sanitize(weights)

    @property
    def cast_predicate(self):
        # As mlx-lm's Qwen3.5: the recurrent decay's A_log keeps its (fp32) precision.
        return lambda path: not path.endswith("A_log")

    @staticmethod
    def config_for_mlx_lm(config: dict[str, Any]) -> dict[str, Any]:
        """What convert writes: the rope keys where mlx-lm's ModelArgs reads them."""
        rope = config.get("rope_parameters") or {}
        lifted = {k: rope[k] for k in ("rope_theta", "partial_rotary_factor") if k in rope}
        return {**lifted, **config}
