"""Rotary position embeddings for Qwen3, including YaRN exactly as Hugging Face computes it.

mlx-lm's ``initialize_rope`` covers the plain and most scaled variants, but its YaRN always
truncates the correction range and ignores ``attention_factor``/``truncate``; Qwen3 long-context
checkpoints are validated against transformers, so YaRN is computed here to the same formula.
Everything else is delegated to mlx-lm.
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any, Iterable

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.rope_utils import initialize_rope

from mlx_backend.models.shape import shape_of

# Keys of a transformers-5 ``rope_parameters`` dict that are not scaling settings.
_NON_SCALING_KEYS = frozenset(
    {"rope_theta", "partial_rotary_factor", "mrope_section", "mrope_interleaved"}
)


def normalize_rope_scaling(rope_scaling: dict[str, Any] | None) -> dict[str, Any] | None:
    """Return a copy with ``rope_type`` set (old configs say ``type``), or None for plain RoPE."""
    if not rope_scaling:
        return None
    scaling = {k: v for k, v in rope_scaling.items() if k not in _NON_SCALING_KEYS}
    rope_type = scaling.pop("type", None)
    scaling["rope_type"] = scaling.get("rope_type") or rope_type or "default"
    if scaling["rope_type"] == "default":
        return None
    return scaling


class YarnRoPE(nn.Module):
    """YaRN (https://arxiv.org/abs/2309.00071) matching transformers' ``_compute_yarn_parameters``.

    transformers multiplies cos and sin by ``attention_factor``; rotating ``x * attention_factor``
    (its rotated dims only) is the same thing, and it is applied to queries and keys alike.
    """

    def __init__(
        self,
        dims: int,
        *,
        base: float,
        factor: float | None,
        original_max_position_embeddings: int,
        max_position_embeddings: int,
        beta_fast: float | None = None,
        beta_slow: float | None = None,
        attention_factor: float | None = None,
        mscale: float | None = None,
        mscale_all_dim: float | None = None,
        truncate: bool = True,
    ):
        super().__init__()
        self.dims = dims
        if factor is None:
            factor = max_position_embeddings / original_max_position_embeddings
        self.factor = float(factor)
        self.original_max_position_embeddings = int(original_max_position_embeddings)

        def get_mscale(scale: float, m: float = 1.0) -> float:
            return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

        if attention_factor is None:
            if mscale and mscale_all_dim:
                attention_factor = get_mscale(factor, mscale) / get_mscale(factor, mscale_all_dim)
            else:
                attention_factor = get_mscale(factor)
        self.attention_factor = float(attention_factor)

        beta_fast = beta_fast or 32
        beta_slow = beta_slow or 1

        def correction_dim(num_rotations: float) -> float:
            return (
                dims * math.log(original_max_position_embeddings / (num_rotations * 2 * math.pi))
            ) / (2 * math.log(base))

        low, high = correction_dim(beta_fast), correction_dim(beta_slow)
        if truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dims - 1)
        if low == high:
            high += 0.001  # transformers' guard against a zero-width ramp

        ramp = mx.clip((mx.arange(dims // 2, dtype=mx.float32) - low) / (high - low), 0, 1)
        extrapolation_weight = 1.0 - ramp
        pos_freqs = base ** (mx.arange(0, dims, 2, dtype=mx.float32) / dims)
        inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolation_weight) + (
            1.0 / pos_freqs
        ) * extrapolation_weight
        # mx.fast.rope takes wavelengths ("freqs" are divided into the position), not inverse ones.
        self._freqs = 1.0 / inv_freq

    def extra_repr(self) -> str:
        return (
            f"{self.dims}, factor={self.factor}, "
            f"original_max_position_embeddings={self.original_max_position_embeddings}"
        )

    def __call__(self, x: mx.array, offset: int | mx.array = 0) -> mx.array:
        if self.attention_factor != 1.0:
            if self.dims < x.shape[-1]:
                # Partial rotary (Qwen3.5 / Qwen3-Next): transformers scales cos and sin, so only
                # the rotated dims are scaled; the pass-through dims stay as they are.
                rotated = x[..., : self.dims] * self.attention_factor
                x = mx.concatenate([rotated, x[..., self.dims :]], axis=-1)
            else:
                x = x * self.attention_factor
        return mx.fast.rope(
            x, self.dims, traditional=False, base=None, scale=1.0, offset=offset, freqs=self._freqs
        )


def make_rope(
    head_dim: int,
    *,
    base: float,
    rope_scaling: dict[str, Any] | None,
    max_position_embeddings: int,
) -> nn.Module:
    """Build the rope module a Qwen3 attention layer uses for ``rope_scaling``."""
    scaling = normalize_rope_scaling(rope_scaling)
    if scaling is not None and scaling["rope_type"] == "yarn":
        return YarnRoPE(
            head_dim,
            base=base,
            factor=scaling.get("factor"),
            original_max_position_embeddings=scaling.get(
                "original_max_position_embeddings", max_position_embeddings
            ),
            max_position_embeddings=max_position_embeddings,
            beta_fast=scaling.get("beta_fast"),
            beta_slow=scaling.get("beta_slow"),
            attention_factor=scaling.get("attention_factor"),
            mscale=scaling.get("mscale"),
            mscale_all_dim=scaling.get("mscale_all_dim"),
            truncate=scaling.get("truncate", True),
        )
    return initialize_rope(
        head_dim,
        base=base,
        traditional=False,
        scaling_config=scaling,
        max_position_embeddings=max_position_embeddings,
    )


def _attention_layers(model: nn.Module) -> Iterable[nn.Module]:
    """The full-attention layers' attention modules (hybrid models' linear layers have none)."""
    for layer in model.layers:
        attention = getattr(layer, "self_attn", None)
        if attention is not None:
            yield attention


def set_rope_scaling(model: nn.Module, rope_scaling: dict[str, Any] | None) -> None:
    """Swap the rope of every attention layer in place (e.g. turn YaRN on for a long document).

    Positions already in a KV cache were rotated with the old rope, so the caller must start
    from a fresh cache after switching.
    """
    shape = shape_of(model)
    scaling = normalize_rope_scaling(rope_scaling)
    for attention in _attention_layers(model):
        attention.rope = make_rope(
            shape.rotary_dims,
            base=shape.rope_theta,
            rope_scaling=scaling,
            max_position_embeddings=shape.max_position_embeddings,
        )
        attention.rope_scaling = freeze_scaling(scaling)


def freeze_scaling(scaling: dict[str, Any] | None) -> MappingProxyType | None:
    """A read-only view: nn.Module would take a plain dict attribute into its parameter tree."""
    return MappingProxyType(dict(scaling)) if scaling else None


def configured_rope_scaling(model: nn.Module) -> dict[str, Any] | None:
    """The rope scaling the model's config asks for (None: plain RoPE)."""
    return normalize_rope_scaling(shape_of(model).rope_scaling)


def current_rope_scaling(model: nn.Module) -> dict[str, Any] | None:
    """The rope scaling the model's attention layers run with right now (None: plain RoPE)."""
    first = next(iter(_attention_layers(model)))
    scaling = getattr(first, "rope_scaling", None)
    return dict(scaling) if scaling else None
