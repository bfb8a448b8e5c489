"""Qwen3 mixture-of-experts decoder (``model_type: qwen3_moe``), e.g. Qwen3-30B-A3B.

Attention (including YaRN) is shared with the dense port; the feed-forward block of the sparse
layers routes each token to ``num_experts_per_tok`` experts. Experts are stored stacked, one
tensor per projection, so mlx-lm's SwitchGLU runs them with gather_mm / gather_qmm.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.switch_layers import SwitchGLU

from mlx_backend.models import qwen3

_EXPERT_KEY = re.compile(
    r"^(model\.layers\.\d+\.mlp)\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.(\w+)$"
)


@dataclass(kw_only=True)
class ModelArgs(qwen3.ModelArgs):
    model_type: str = "qwen3_moe"
    num_experts: int
    num_experts_per_tok: int
    moe_intermediate_size: int
    norm_topk_prob: bool = False  # transformers' default; released checkpoints set it to true
    decoder_sparse_step: int = 1
    mlp_only_layers: list[int] = field(default_factory=list)

    def _validate(self) -> None:
        super()._validate()
        if not 0 < self.num_experts_per_tok <= self.num_experts:
            raise ValueError(
                f"num_experts_per_tok ({self.num_experts_per_tok}) must be between 1 and "
                f"num_experts ({self.num_experts})"
            )
        if self.decoder_sparse_step <= 0:
            raise ValueError("decoder_sparse_step must be a positive integer")

    def is_sparse_layer(self, layer_idx: int) -> bool:
        """transformers' rule for which layers get experts instead of a dense MLP."""
        return (
            layer_idx not in self.mlp_only_layers
            and self.num_experts > 0
            and (layer_idx + 1) % self.decoder_sparse_step == 0
        )


class SparseMoeBlock(nn.Module):
    """Softmax router, top-k experts, optional renormalisation of the chosen probabilities."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.top_k = args.num_experts_per_tok
        self.norm_topk_prob = args.norm_topk_prob
        self.gate = nn.Linear(args.hidden_size, args.num_experts, bias=False)
        self.switch_mlp = SwitchGLU(args.hidden_size, args.moe_intermediate_size, args.num_experts)

    def __call__(self, x: mx.array) -> mx.array:
        # Routing decisions are sensitive: softmax in float32 like transformers does.
        probs = mx.softmax(self.gate(x).astype(mx.float32), axis=-1)
        k = self.top_k
        experts = mx.stop_gradient(mx.argpartition(-probs, kth=k - 1, axis=-1)[..., :k])
        weights = mx.take_along_axis(probs, experts, axis=-1)
        if self.norm_topk_prob:
            weights = weights / weights.sum(axis=-1, keepdims=True)
        y = self.switch_mlp(x, experts)
        return (y * weights[..., None].astype(y.dtype)).sum(axis=-2)


class Model(qwen3.CausalLM):
    """Qwen3-MoE causal language model."""

    def __init__(self, args: ModelArgs):
        layers = [
            qwen3.DecoderLayer(
                args,
                SparseMoeBlock(args)
                if args.is_sparse_layer(i)
                else qwen3.MLP(args.hidden_size, args.intermediate_size),
            )
            for i in range(args.num_hidden_layers)
        ]
        super().__init__(args, layers)

    def sanitize(self, weights: dict[str, mx.array]) -> dict[str, mx.array]:
        """Stack HF's per-expert tensors into SwitchGLU's; already stacked MLX ones pass through."""
        weights = super().sanitize(weights)
        per_expert: dict[tuple[str, str, str], dict[int, mx.array]] = {}
        out: dict[str, mx.array] = {}
        for key, value in weights.items():
            match = _EXPERT_KEY.match(key)
            if match is None:
                out[key] = value
                continue
            prefix, expert, proj, kind = match.groups()
            per_expert.setdefault((prefix, proj, kind), {})[int(expert)] = value
        for (prefix, proj, kind), experts in per_expert.items():
            missing = sorted(set(range(self.args.num_experts)) - experts.keys())
            if missing:
                # Leave the pieces under their own names: loading reports them precisely.
                for e, value in experts.items():
                    out[f"{prefix}.experts.{e}.{proj}.{kind}"] = value
                continue
            stacked = [experts[e] for e in range(self.args.num_experts)]
            out[f"{prefix}.switch_mlp.{proj}.{kind}"] = mx.stack(stacked)
        return out

    @property
    def quant_predicate(self):
        """Keep the router at 8 bits when quantizing, as mlx-lm does: it picks the experts."""

        def predicate(path: str, _module: nn.Module) -> bool | dict:
            if path.endswith("mlp.gate"):
                return {"group_size": 64, "bits": 8}
            return True

        return predicate
