"""Qwen3 dense decoder (``model_type: qwen3``) on MLX, following mlx-lm's model protocol.

The module tree and parameter names mirror Hugging Face's ``Qwen3ForCausalLM`` so checkpoints
load without renaming, and the ``Model`` class behaves like an mlx-lm model (``__call__(inputs,
cache)``, ``.layers``, ``.args``, ``sanitize``) so mlx-lm's generate_step, KV caches, samplers
and ``nn.quantize`` work on it unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models.activations import swiglu
from mlx_lm.models.base import BaseModelArgs, create_attention_mask, scaled_dot_product_attention
from mlx_lm.models.pipeline import PipelineMixin

from mlx_backend.models.rope import freeze_scaling, make_rope, normalize_rope_scaling

DEFAULT_ROPE_THETA = 10000.0  # transformers' Qwen3Config default


@dataclass(kw_only=True)
class ModelArgs(BaseModelArgs):
    """The fields of a Hugging Face Qwen3 ``config.json`` that shape the network."""

    model_type: str = "qwen3"
    hidden_size: int
    num_hidden_layers: int
    intermediate_size: int
    num_attention_heads: int
    vocab_size: int
    num_key_value_heads: int | None = None
    head_dim: int | None = None
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 40960
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    rope_theta: float | None = None
    rope_scaling: dict[str, Any] | None = None
    # transformers >= 5 writes rope_theta and the scaling settings here instead.
    rope_parameters: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.rope_parameters:
            if self.rope_theta is None:
                self.rope_theta = self.rope_parameters.get("rope_theta")
            if self.rope_scaling is None:
                self.rope_scaling = self.rope_parameters
        if self.rope_theta is None:
            self.rope_theta = DEFAULT_ROPE_THETA
        self.rope_scaling = normalize_rope_scaling(self.rope_scaling)
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        self._validate()
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads

    def _validate(self) -> None:
        for name in (
            "hidden_size",
            "num_hidden_layers",
            "intermediate_size",
            "num_attention_heads",
            "num_key_value_heads",
            "vocab_size",
            "head_dim",
        ):
            value = getattr(self, name)
            if name == "head_dim" and value is None:
                continue  # derived from hidden_size / num_attention_heads
            if not isinstance(value, int) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, not {value!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads ({self.num_attention_heads}) must be a multiple of "
                f"num_key_value_heads ({self.num_key_value_heads})"
            )


class Attention(nn.Module):
    """Grouped-query attention with Qwen3's per-head RMSNorm on queries and keys."""

    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads = args.num_attention_heads
        self.n_kv_heads = args.num_key_value_heads
        self.head_dim = args.head_dim
        self.scale = self.head_dim**-0.5

        dim, bias = args.hidden_size, args.attention_bias
        self.q_proj = nn.Linear(dim, self.n_heads * self.head_dim, bias=bias)
        self.k_proj = nn.Linear(dim, self.n_kv_heads * self.head_dim, bias=bias)
        self.v_proj = nn.Linear(dim, self.n_kv_heads * self.head_dim, bias=bias)
        self.o_proj = nn.Linear(self.n_heads * self.head_dim, dim, bias=bias)
        self.q_norm = nn.RMSNorm(self.head_dim, eps=args.rms_norm_eps)
        self.k_norm = nn.RMSNorm(self.head_dim, eps=args.rms_norm_eps)
        self.rope = make_rope(
            self.head_dim,
            base=args.rope_theta,
            rope_scaling=args.rope_scaling,
            max_position_embeddings=args.max_position_embeddings,
        )
        self.rope_scaling = freeze_scaling(args.rope_scaling)

    def __call__(self, x: mx.array, mask: Any = None, cache: Any = None) -> mx.array:
        B, L, _ = x.shape
        queries = self.q_norm(self.q_proj(x).reshape(B, L, self.n_heads, -1))
        keys = self.k_norm(self.k_proj(x).reshape(B, L, self.n_kv_heads, -1))
        values = self.v_proj(x).reshape(B, L, self.n_kv_heads, -1)
        queries = queries.transpose(0, 2, 1, 3)
        keys = keys.transpose(0, 2, 1, 3)
        values = values.transpose(0, 2, 1, 3)

        offset = cache.offset if cache is not None else 0
        queries = self.rope(queries, offset=offset)
        keys = self.rope(keys, offset=offset)
        if cache is not None:
            keys, values = cache.update_and_fetch(keys, values)

        output = scaled_dot_product_attention(
            queries, keys, values, cache=cache, scale=self.scale, mask=mask
        )
        return self.o_proj(output.transpose(0, 2, 1, 3).reshape(B, L, -1))


class MLP(nn.Module):
    """SwiGLU feed-forward block."""

    def __init__(self, dim: int, hidden_dim: int):
        super().__init__()
        self.gate_proj = nn.Linear(dim, hidden_dim, bias=False)
        self.up_proj = nn.Linear(dim, hidden_dim, bias=False)
        self.down_proj = nn.Linear(hidden_dim, dim, bias=False)

    def __call__(self, x: mx.array) -> mx.array:
        return self.down_proj(swiglu(self.gate_proj(x), self.up_proj(x)))


class DecoderLayer(nn.Module):
    """Pre-norm residual block: attention, then a feed-forward block (dense or MoE)."""

    def __init__(self, args: ModelArgs, mlp: nn.Module):
        super().__init__()
        self.self_attn = Attention(args)
        self.mlp = mlp
        self.input_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)
        self.post_attention_layernorm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)

    def __call__(self, x: mx.array, mask: Any = None, cache: Any = None) -> mx.array:
        h = x + self.self_attn(self.input_layernorm(x), mask, cache)
        return h + self.mlp(self.post_attention_layernorm(h))


class Qwen3Model(PipelineMixin, nn.Module):
    """Embeddings, decoder stack and final norm (the ``model.*`` prefix of HF checkpoints).

    As a pipeline stage (mlx-lm's ``PipelineMixin.pipeline(group)``, as its qwen3_5 does) it
    holds only its run of layers: it receives the hidden state from the rank holding the layers
    before, sends its own on, and every rank gets the last stage's output back.
    """

    def __init__(self, args: ModelArgs, layers: list[DecoderLayer]):
        super().__init__()
        self.embed_tokens = nn.Embedding(args.vocab_size, args.hidden_size)
        self.layers = layers
        self.norm = nn.RMSNorm(args.hidden_size, eps=args.rms_norm_eps)

    def __call__(
        self, inputs: mx.array, cache: Any = None, input_embeddings: mx.array | None = None
    ) -> mx.array:
        h = input_embeddings if input_embeddings is not None else self.embed_tokens(inputs)
        layers = self.pipeline_layers
        if cache is None:
            cache = [None] * len(layers)
        mask = create_attention_mask(h, cache[0])
        rank, size = self.pipeline_rank, self.pipeline_size
        # mlx-lm's order: the highest rank holds the first layers, rank 0 the last ones.
        if rank < size - 1:
            h = mx.distributed.recv_like(h, rank + 1)
        for layer, layer_cache in zip(layers, cache):
            h = layer(h, mask, layer_cache)
        if rank != 0:
            h = mx.distributed.send(h, rank - 1)
            if cache[-1] is not None:  # keep the send in the graph that evaluating the cache runs
                cache[-1].keys = mx.depends(cache[-1].keys, h)
        if size > 1:  # rank 0's slice is the last stage's output
            h = mx.distributed.all_gather(h)[: h.shape[0]]
        return self.norm(h)


class CausalLM(nn.Module):
    """Shared top of the dense and MoE models: language-model head and the mlx-lm protocol."""

    def __init__(self, args: ModelArgs, layers: list[DecoderLayer]):
        super().__init__()
        self.args = args
        self.model_type = args.model_type
        self.model = Qwen3Model(args, layers)
        if not args.tie_word_embeddings:
            self.lm_head = nn.Linear(args.hidden_size, args.vocab_size, bias=False)

    def __call__(
        self, inputs: mx.array, cache: Any = None, input_embeddings: mx.array | None = None
    ) -> mx.array:
        out = self.model(inputs, cache, input_embeddings)
        if self.args.tie_word_embeddings:
            return self.model.embed_tokens.as_linear(out)
        return self.lm_head(out)

    @property
    def layers(self) -> list[DecoderLayer]:
        """The layers this process runs (all of them, unless it is one stage of a pipeline)."""
        return self.model.pipeline_layers

    def sanitize(self, weights: dict[str, mx.array]) -> dict[str, mx.array]:
        """Drop checkpoint tensors the MLX model has no slot for."""
        if self.args.tie_word_embeddings:
            # Some exporters write the tied head anyway; it is the embedding matrix again.
            weights.pop("lm_head.weight", None)
        # Old exports carry the rope's precomputed inverse frequencies; we compute our own.
        return {k: v for k, v in weights.items() if "rotary_emb.inv_freq" not in k}


class Model(CausalLM):
    """Qwen3 dense causal language model."""

    def __init__(self, args: ModelArgs):
        layers = [
            DecoderLayer(args, MLP(args.hidden_size, args.intermediate_size))
            for _ in range(args.num_hidden_layers)
        ]
        super().__init__(args, layers)
