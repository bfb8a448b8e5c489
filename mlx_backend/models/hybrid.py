"""What the hybrid Qwen architectures (Qwen3.5 / 3.6 / 3.8, Qwen3-Next) add to mlx-lm's models.

mlx-lm's ``qwen3_5``, ``qwen3_5_moe`` and ``qwen3_next`` run the networks (their gated-delta
kernels included) and match transformers; what they lack is handled here, once for the three:

- checkpoint layouts: transformers' ``save_pretrained`` writes one tensor per expert, the
  published Qwen3.5 MoE checkpoints fuse them (``experts.gate_up_proj``); mlx-lm reads only one
  of the two per architecture, so both are brought to the layout it reads;
- a cache whose linear layers count positions and take snapshots (``linear_state.py``), which
  the prompt cache needs to reuse a conversation without re-running it;
- our rope modules on the full-attention layers, so YaRN (and switching it per request) works
  as it does for Qwen3;
- a check that ``layer_types`` says what mlx-lm builds (a full-attention layer every
  ``full_attention_interval``), which the loader runs so another layout fails clearly.
"""

from __future__ import annotations

import re
from typing import Any, Mapping

import mlx.core as mx
from mlx_lm.models.cache import KVCache

from mlx_backend.models.linear_state import LinearStateCache
from mlx_backend.models.rope import configured_rope_scaling, set_rope_scaling

# The vision tower of a multimodal checkpoint: text chat never needs it, so it is never loaded.
VISION_PREFIXES = ("model.visual.", "visual.", "vision_tower.", "model.vision_tower.")

_PER_EXPERT = re.compile(r"^(.*\.mlp)\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")


def is_vision_weight(key: str) -> bool:
    return key.startswith(VISION_PREFIXES)


def make_hybrid_cache(layers: list[Any]) -> list[Any]:
    return [LinearStateCache() if layer.is_linear else KVCache() for layer in layers]


class HybridModel:
    """Mixed in before an mlx-lm hybrid model class: our rope once mlx-lm has built the layers,
    and a cache whose linear layers count positions and take snapshots."""

    def __init__(self, args: Any):
        super().__init__(args)
        install_rope(self)

    def make_cache(self) -> list[Any]:
        return make_hybrid_cache(self.layers)


def check_layer_types(text: Mapping[str, Any]) -> None:
    """Refuse a ``layer_types`` list that disagrees with the interval mlx-lm builds from."""
    kinds = text.get("layer_types")
    if not kinds:
        return
    layers = int(text.get("num_hidden_layers") or len(kinds))
    if len(kinds) != layers:
        raise ValueError(f"layer_types lists {len(kinds)} layers but num_hidden_layers is {layers}")
    interval = int(text.get("full_attention_interval") or 4)
    built = [
        "full_attention" if (i + 1) % interval == 0 else "linear_attention"
        for i in range(len(kinds))
    ]
    if list(kinds) != built:
        raise ValueError(
            "layer_types must place a full_attention layer every "
            f"{interval} layers (full_attention_interval); this config lists another layout"
        )


def install_rope(model: Any) -> None:
    """Put our rope modules on the attention layers, with the config's own scaling."""
    set_rope_scaling(model, configured_rope_scaling(model))


def fuse_per_expert_weights(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """transformers' one-tensor-per-expert layout -> the fused one Qwen publishes.

    ``experts.{e}.{gate,up,down}_proj.weight`` become ``experts.gate_up_proj`` ([E, 2I, H],
    gate rows first) and ``experts.down_proj`` ([E, H, I]), which mlx-lm's MoE sanitize then
    splits into its SwitchGLU. Lazy: the stacked tensors are built once, when the weights are
    evaluated (a copy of the experts at load, not a second resident one).
    """
    grouped: dict[str, dict[str, dict[int, mx.array]]] = {}
    rest: dict[str, mx.array] = {}
    for key, value in weights.items():
        match = _PER_EXPERT.match(key)
        if match is None:
            rest[key] = value
            continue
        prefix, expert, projection = match.group(1), int(match.group(2)), match.group(3)
        grouped.setdefault(prefix, {}).setdefault(projection, {})[expert] = value
    for prefix, projections in grouped.items():
        stacked = {name: _stack(prefix, name, experts) for name, experts in projections.items()}
        if set(stacked) != {"gate_proj", "up_proj", "down_proj"}:
            missing = {"gate_proj", "up_proj", "down_proj"} - set(stacked)
            raise ValueError(f"{prefix}.experts lacks {', '.join(sorted(missing))}")
        rest[f"{prefix}.experts.gate_up_proj"] = mx.concatenate(
            [stacked["gate_proj"], stacked["up_proj"]], axis=-2
        )
        rest[f"{prefix}.experts.down_proj"] = stacked["down_proj"]
    return rest


def check_per_expert_weights(weights: Mapping[str, Any], num_experts: int) -> None:
    """Every MoE layer written one tensor per expert has all ``num_experts`` experts, each with
    its three projections; otherwise a ValueError names the first tensor that is missing."""
    experts: dict[str, set[tuple[int, str]]] = {}
    for key in weights:
        match = _PER_EXPERT.match(key)
        if match is not None:
            experts.setdefault(match.group(1), set()).add((int(match.group(2)), match.group(3)))
    for prefix in sorted(experts):
        found = experts[prefix]
        beyond = sorted(e for e, _ in found if e >= num_experts)
        if beyond:
            raise ValueError(
                f"{prefix} has expert {beyond[-1]} but config.json says num_experts is "
                f"{num_experts}"
            )
        missing = [
            f"{prefix}.experts.{e}.{name}.weight"
            for e in range(num_experts)
            for name in ("gate_proj", "up_proj", "down_proj")
            if (e, name) not in found
        ]
        if missing:
            raise ValueError(
                f"{len(missing)} expert tensor(s) of {prefix} are missing (e.g. {missing[0]})"
            )


def split_fused_expert_weights(weights: dict[str, mx.array]) -> dict[str, mx.array]:
    """The fused layout -> one tensor per expert (the layout mlx-lm's Qwen3-Next reads)."""
    out: dict[str, mx.array] = {}
    for key, value in weights.items():
        if key.endswith(".experts.gate_up_proj"):
            prefix = key.removesuffix(".gate_up_proj")
            mid = value.shape[-2] // 2
            for e in range(value.shape[0]):
                out[f"{prefix}.{e}.gate_proj.weight"] = value[e, :mid, :]
                out[f"{prefix}.{e}.up_proj.weight"] = value[e, mid:, :]
        elif key.endswith(".experts.down_proj"):
            prefix = key.removesuffix(".down_proj")
            for e in range(value.shape[0]):
                out[f"{prefix}.{e}.down_proj.weight"] = value[e]
        else:
            out[key] = value
    return out


def _stack(prefix: str, name: str, experts: dict[int, mx.array]) -> mx.array:
    count = max(experts) + 1
    if sorted(experts) != list(range(count)):
        raise ValueError(f"{prefix}.experts.*.{name} does not number its experts 0..{count - 1}")
    return mx.stack([experts[e] for e in range(count)])
