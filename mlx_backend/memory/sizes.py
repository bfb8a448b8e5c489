"""How many bytes a model's weights and its KV cache take, from ``config.json`` alone.

Weights are measured, not computed by hand: the config builds our MLX model lazily (MLX arrays
are lazy, so constructing the module, casting it and quantizing it like the checkpoint allocates
nothing) and the parameters' ``nbytes`` are summed. Every matrix, every MoE expert, the packed
bits and the per-group scales and biases are then counted exactly as a load would hold them.
The KV cache is a formula of the config: K and V per layer of ``kv_heads x head_dim`` values
per token.
"""

from __future__ import annotations

import functools
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from mlx_backend.loading.loader import (
    architecture,
    layer_quantization,
    model_args,
    quantization_defaults,
    quantization_settings,
)
from mlx_backend.models.limits import KV_GROUP_SIZE
from mlx_backend.models.shape import ModelShape

GB = 1e9  # decimal gigabytes, as Hugging Face and Finder quote file sizes
# mlx-lm's KVCache grows in steps of 256 positions; a context is allocated in whole steps.
KV_ALLOCATION_STEP = 256

_DTYPES = {"float32": mx.float32, "float16": mx.float16, "bfloat16": mx.bfloat16}


def weight_dtype(config: Mapping[str, Any]) -> mx.Dtype:
    """The checkpoint's float dtype (norms, unquantized matrices, scales, activations, KV)."""
    name = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
    return _DTYPES.get(name.replace("torch.", ""), mx.bfloat16)


def model_nbytes(model: nn.Module) -> int:
    """Bytes of every array the model holds (its resident weights)."""
    return sum(v.nbytes for _, v in tree_flatten(model.parameters()))


def count_parameters(config: Mapping[str, Any]) -> int:
    """All parameters, every expert included (what must be resident, not what is active)."""
    return _measure(_frozen(config))[0]


def estimate_weights_bytes(config: Mapping[str, Any]) -> int:
    """Resident bytes of the weights described by ``config`` (quantized or not)."""
    return _measure(_frozen(config))[1]


def _frozen(config: Mapping[str, Any]) -> str:
    # A config is nested dicts and lists: its canonical JSON is a hashable key that says it all.
    return json.dumps(config, sort_keys=True)


# Building the catalog's largest entries lazily takes about 0.3 s (Qwen3-235B-A22B, 94 layers
# of 128 stacked experts) and 0.1 s (Qwen3-32B) on one CPU core, allocating a few kB; cached so
# the model manager's badges and sizes cost that once per config.
@functools.lru_cache(maxsize=64)
def _measure(frozen_config: str) -> tuple[int, int]:
    """(parameter count before quantization, resident bytes as the checkpoint stores them)."""
    config = json.loads(frozen_config)
    model = architecture(config).Model(model_args(config))
    parameters = sum(v.size for _, v in tree_flatten(model.parameters()))
    model.set_dtype(weight_dtype(config))
    quantization = quantization_settings(config)
    if quantization is not None:
        _quantize_as_configured(model, quantization)
    return parameters, model_nbytes(model)


@functools.lru_cache(maxsize=64)
def _measure_parts(frozen_config: str) -> tuple[int, int, tuple[int, ...]]:
    """(embedding bytes, final norm + head bytes, bytes of each decoder layer), as stored."""
    config = json.loads(frozen_config)
    model = architecture(config).Model(model_args(config))
    model.set_dtype(weight_dtype(config))
    quantization = quantization_settings(config)
    if quantization is not None:
        _quantize_as_configured(model, quantization)
    embedding = head = 0
    layers: dict[int, int] = {}
    for name, value in tree_flatten(model.parameters()):
        match = _LAYER_NAME.search(name)
        if match:
            index = int(match.group(1))
            layers[index] = layers.get(index, 0) + value.nbytes
        elif "embed_tokens" in name:
            embedding += value.nbytes
        else:  # the final norm and an untied head
            head += value.nbytes
    return embedding, head, tuple(layers[i] for i in sorted(layers))


# A decoder layer's parameters, whatever the wrapper: "model.layers.3.", "language_model.model.layers.3."
_LAYER_NAME = re.compile(r"(?:^|\.)layers\.(\d+)\.")


@dataclass(frozen=True)
class WeightParts:
    """The weights as a pipeline splits them: embedding, one entry per decoder layer, head."""

    embedding_bytes: int
    head_bytes: int  # final norm and an untied lm_head (with tied embeddings the embedding is the head)
    layer_bytes: tuple[int, ...]
    tied_embeddings: bool

    @property
    def total_bytes(self) -> int:
        return self.embedding_bytes + self.head_bytes + sum(self.layer_bytes)


def weight_parts(config: Mapping[str, Any]) -> WeightParts:
    embedding, head, layers = _measure_parts(_frozen(config))
    text = config.get("text_config") if isinstance(config.get("text_config"), Mapping) else config
    tied = bool(text.get("tie_word_embeddings", config.get("tie_word_embeddings", False)))
    return WeightParts(embedding, head, layers, tied)


def _quantize_as_configured(model: nn.Module, quantization: dict[str, Any]) -> None:
    """Quantize the layers a checkpoint with this quantization block holds packed."""
    defaults = quantization_defaults(quantization)

    def predicate(path: str, module: nn.Module) -> bool | dict[str, Any]:
        params = layer_quantization(quantization, path)
        if params is True:
            # mlx-lm leaves a matrix unquantized when its rows don't split into whole groups.
            return (
                hasattr(module, "to_quantized")
                and module.weight.shape[-1] % defaults["group_size"] == 0
            )
        return params

    nn.quantize(model, **defaults, class_predicate=predicate)


def kv_bytes_per_token(config: Mapping[str, Any], kv_bits: Optional[int] = None) -> float:
    """Bytes the KV cache needs per context position, all layers, K and V."""
    shape = ModelShape.from_config(config)
    # Only full-attention layers keep keys and values; a hybrid's linear layers keep a state.
    values_per_token = len(shape.attention_layers) * shape.num_kv_heads * shape.head_dim * 2
    dtype_bytes = weight_dtype(config).size
    if kv_bits is None:
        return float(values_per_token * dtype_bytes)
    # QuantizedKVCache: packed values plus a scale and a bias per group, in the activation dtype.
    return values_per_token * (kv_bits / 8 + 2 * dtype_bytes / KV_GROUP_SIZE)


def estimate_kv_cache_bytes(
    config: Mapping[str, Any], context_tokens: int, kv_bits: Optional[int] = None
) -> int:
    allocated = math.ceil(context_tokens / KV_ALLOCATION_STEP) * KV_ALLOCATION_STEP
    return int(allocated * kv_bytes_per_token(config, kv_bits))


def estimate_linear_state_bytes(config: Mapping[str, Any]) -> int:
    """Bytes of a hybrid's linear-attention layers' state (conv window + recurrent state) for
    one sequence: constant, however long the context; 0 for models without such layers."""
    shape = ModelShape.from_config(config)
    if shape.linear is None:
        return 0
    return len(shape.linear_layers) * shape.linear.state_bytes(weight_dtype(config).size)
