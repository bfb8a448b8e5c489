"""The shape of a Qwen model's text decoder, read from its config: one answer for every family.

Qwen3 configs are flat; Qwen3.5 / 3.6 / 3.8 (``qwen3_5``, ``qwen3_5_moe``) nest the decoder in
``text_config`` beside a vision tower; Qwen3-Next is flat but hybrid. The engine, the rope swap,
the memory planner and the document planner all ask the questions below (how many layers attend
over the whole context, how large is a head, how large is a linear layer's state) and get them
answered here, so none of them parses configs of its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

# Architectures whose layers mix Gated DeltaNet (linear attention) with full attention.
HYBRID_MODEL_TYPES = frozenset({"qwen3_5", "qwen3_5_moe", "qwen3_next"})
DEFAULT_ROPE_THETA = 10000.0  # transformers' Qwen3Config default
# mlx-lm's gated-delta kernels keep the recurrent state in float32 whatever the weights' dtype.
LINEAR_STATE_DTYPE_BYTES = 4


@dataclass(frozen=True)
class LinearLayerShape:
    """A Gated DeltaNet layer: a causal conv over the last ``conv_kernel - 1`` inputs and a
    recurrent state of ``value_heads x value_head_dim x key_head_dim`` per sequence."""

    conv_dim: int
    conv_kernel: int
    value_heads: int
    key_head_dim: int
    value_head_dim: int

    def state_bytes(self, activation_bytes: int) -> int:
        """Bytes of one layer's state: constant, however long the context."""
        conv = (self.conv_kernel - 1) * self.conv_dim * activation_bytes
        recurrent = self.value_heads * self.value_head_dim * self.key_head_dim
        return conv + recurrent * LINEAR_STATE_DTYPE_BYTES


@dataclass(frozen=True)
class ModelShape:
    model_type: str
    num_layers: int
    attention_layers: tuple[int, ...]  # indices of the full-attention layers (all, for Qwen3)
    head_dim: int
    num_kv_heads: int
    vocab_size: int
    max_position_embeddings: int
    rope_theta: float
    rotary_dims: int  # head_dim x partial_rotary_factor
    rope_scaling: Optional[dict[str, Any]]  # as the config gives it (None: plain RoPE)
    linear: Optional[LinearLayerShape]  # None for models without linear-attention layers

    @property
    def is_hybrid(self) -> bool:
        return self.linear is not None

    @property
    def linear_layers(self) -> tuple[int, ...]:
        attention = set(self.attention_layers)
        return tuple(i for i in range(self.num_layers) if i not in attention)

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "ModelShape":
        text = text_config(config)
        model_type = str(config.get("model_type") or text.get("model_type") or "")
        layers = int(text["num_hidden_layers"])
        heads = int(text["num_attention_heads"])
        head_dim = int(text.get("head_dim") or int(text["hidden_size"]) // heads)
        rope = text.get("rope_parameters") or {}
        theta = text.get("rope_theta") or rope.get("rope_theta") or DEFAULT_ROPE_THETA
        partial = text.get("partial_rotary_factor") or rope.get("partial_rotary_factor") or 1.0
        hybrid = model_type in HYBRID_MODEL_TYPES
        return cls(
            model_type=model_type,
            num_layers=layers,
            attention_layers=_attention_layers(text, layers) if hybrid else tuple(range(layers)),
            head_dim=head_dim,
            num_kv_heads=int(text.get("num_key_value_heads") or heads),
            vocab_size=int(text["vocab_size"]),
            max_position_embeddings=max_positions(config),
            rope_theta=float(theta),
            rotary_dims=int(head_dim * float(partial)),
            rope_scaling=configured_rope(config),
            linear=_linear_shape(text) if hybrid else None,
        )


def text_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The decoder's settings: ``text_config`` of a multimodal checkpoint, else the config."""
    nested = config.get("text_config")
    return dict(nested) if isinstance(nested, Mapping) else dict(config)


def max_positions(config: Mapping[str, Any]) -> int:
    """Positions the checkpoint was built for (Qwen3's default where a config leaves it out)."""
    return int(text_config(config).get("max_position_embeddings") or 40960)


def configured_rope(config: Mapping[str, Any]) -> Optional[dict[str, Any]]:
    """The rope settings as the config writes them (old ``rope_scaling`` or transformers-5
    ``rope_parameters``); None for plain RoPE without settings."""
    text = text_config(config)
    return text.get("rope_scaling") or text.get("rope_parameters")


def shape_of(model: Any) -> ModelShape:
    """The shape of a built model (from the config it was loaded with, else from its args)."""
    load_info = getattr(model, "load_info", None)
    if load_info is not None:
        return ModelShape.from_config(load_info.config)
    return ModelShape.from_config(vars(model.args))


def _attention_layers(text: Mapping[str, Any], layers: int) -> tuple[int, ...]:
    kinds = text.get("layer_types")
    if kinds:
        return tuple(i for i, kind in enumerate(kinds) if kind == "full_attention")
    interval = int(text.get("full_attention_interval") or 4)
    return tuple(i for i in range(layers) if (i + 1) % interval == 0)


def _linear_shape(text: Mapping[str, Any]) -> LinearLayerShape:
    key_heads = int(text["linear_num_key_heads"])
    value_heads = int(text["linear_num_value_heads"])
    key_dim = int(text["linear_key_head_dim"])
    value_dim = int(text["linear_value_head_dim"])
    return LinearLayerShape(
        conv_dim=2 * key_heads * key_dim + value_heads * value_dim,
        conv_kernel=int(text.get("linear_conv_kernel_dim") or 4),
        value_heads=value_heads,
        key_head_dim=key_dim,
        value_head_dim=value_dim,
    )
