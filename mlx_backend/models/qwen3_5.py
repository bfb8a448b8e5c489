"""Qwen3.5 / 3.6 / 3.8 text decoders (``qwen3_5`` dense, ``qwen3_5_moe``): mlx-lm's models.

Three Gated DeltaNet layers for every full-attention layer, partial rotary (mRoPE, which for
text alone is plain RoPE on the first quarter of each head). The checkpoints are multimodal
(``...ForConditionalGeneration``: ``model.language_model.*`` beside ``model.visual.*``); the text
model is built and the vision tower skipped. See ``hybrid.py`` for what is added to mlx-lm.
"""

from __future__ import annotations

from typing import Any

import mlx.core as mx
from mlx_lm.models import qwen3_5 as mlx_qwen3_5
from mlx_lm.models import qwen3_5_moe as mlx_qwen3_5_moe

from mlx_backend.models.hybrid import (
    HybridModel,
    check_per_expert_weights,
    fuse_per_expert_weights,
    is_vision_weight,
)


class ModelArgs(mlx_qwen3_5.ModelArgs):
    @classmethod
    def from_dict(cls, params: dict[str, Any]) -> "ModelArgs":
        # transformers ties the embeddings by the top-level flag when text_config has none
        # (mlx-lm reads text_config only, and would look for an lm_head that is not there).
        text = params.get("text_config")
        if isinstance(text, dict) and text.get("tie_word_embeddings") is None:
            tie = bool(params.get("tie_word_embeddings", False))
            params = {**params, "text_config": {**text, "tie_word_embeddings": tie}}
        return super().from_dict(params)


class Model(HybridModel, mlx_qwen3_5.Model):
    def sanitize(self, weights: dict[str, mx.array]) -> dict[str, mx.array]:
        weights = {k: v for k, v in weights.items() if not is_vision_weight(k)}
        check_per_expert_weights(weights, self.language_model.args.num_experts)
        return super().sanitize(fuse_per_expert_weights(weights))


class MoeModel(Model, mlx_qwen3_5_moe.Model):
    """The MoE variant: mlx-lm's MoE sanitize (fused experts -> SwitchGLU) after ours."""
