"""Tensor parallelism for dense models: every rank holds 1/N of each layer's matrices.

Attention is split by heads (q/k/v column-sharded, each rank attends with its own heads and
keeps only their KV cache) and the MLP by its hidden units (gate/up column-sharded); o_proj
and down_proj are row-sharded and end in an all-reduce, so each layer's output is the full
hidden state again on every rank. The layers are mlx.nn's own (``shard_linear``: AllToSharded
/ ShardedToAll linear layers, quantized ones for 4/8-bit checkpoints). Embeddings and norms
stay whole on every rank; so does the Qwen3 head (mlx-lm's Qwen3.5 shard, which we reuse
for the hybrid, splits its head by vocabulary and gathers the logits).

On a rank, reading a tensor to cut its slice briefly holds that whole tensor: the peak is
this rank's share plus the largest single tensor (usually the embedding or the head).

The model is sharded while its weights are still lazy (``load_model(lazy=True)``), then
evaluated layer by layer: a rank reads each tensor from the safetensors, keeps its slice and
drops the rest, so its resident weights are about 1/N of the sharded matrices.

Every rank then runs the unchanged engine (``Engine(model, tokenizer, group=group)``); rank
0 samples for all (distributed/group.py).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, Union

import mlx.core as mx
import mlx.nn as nn
from mlx.nn.layers.distributed import shard_linear
from mlx.utils import tree_flatten

from mlx_backend.distributed.group import RankGroup
from mlx_backend.errors import ModelLoadError
from mlx_backend.memory.sizes import estimate_weights_bytes, model_nbytes
from mlx_backend.models import qwen3, qwen3_5
from mlx_backend.models.shape import ModelShape


DENSE_MODEL_TYPES = frozenset({"qwen3", "qwen3_5"})


class TensorParallelError(ModelLoadError):
    """This model can't be split across this many ranks by tensor parallelism."""


def shard_model(model: nn.Module, group: Union[RankGroup, mx.distributed.Group]) -> nn.Module:
    """Shard ``model`` in place across ``group`` (before its weights are evaluated) and
    return it. A group of one leaves the model as it is."""
    group = _mx_group(group)
    if group is None or group.size() == 1:
        return model
    size = group.size()
    if isinstance(model, qwen3.Model):
        _shard_qwen3(model, group, size)
    elif isinstance(model, qwen3_5.Model) and not isinstance(model, qwen3_5.MoeModel):
        _check_qwen3_5(model, size)
        model.shard(group)  # mlx-lm's shard (mlx.nn's layers), through our wrapper
    else:
        kind = getattr(model, "model_type", type(model).__name__)
        raise TensorParallelError(
            f"Tensor parallelism is for the dense Qwen3 and Qwen3.5 models; this is {kind}. "
            "Run it as pipeline stages (each rank a share of the layers) instead."
        )
    return model


def load_tensor_parallel(
    path: Union[str, Path], group: Union[RankGroup, mx.distributed.Group]
) -> tuple[nn.Module, Any]:
    """Load the model folder at ``path`` with each rank of ``group`` holding its shard only.

    Returns (model, tokenizer) like ``loading.loader.load``; ``model.load_info.weights_bytes``
    is this rank's share. Every rank must call it (with the same folder)."""
    from mlx_backend.loading.loader import load_model
    from mlx_backend.text.tokenizer import Qwen3Tokenizer

    model = load_model(path, lazy=True)
    shard_model(model, group)
    # One tensor at a time: a rank reads a whole tensor to cut its slice, and never holds
    # more than one unsharded tensor at once.
    for _, value in tree_flatten(model.parameters()):
        mx.eval(value)
    model.load_info = dataclasses.replace(model.load_info, weights_bytes=model_nbytes(model))
    return model, Qwen3Tokenizer.from_folder(Path(path).expanduser())


def sharded_weights_bytes(model: nn.Module) -> int:
    """Bytes of the layers' matrices that tensor parallelism splits (what should be 1/N):
    every projection (and the hybrids' conv) of every layer; not norms, embeddings, head."""
    split = ("_proj.", "conv1d.")
    return sum(
        value.nbytes
        for layer in model.layers
        for name, value in tree_flatten(layer.parameters())
        if any(part in name for part in split)
    )


# ------------------------------------------------------------------ Qwen3 dense


def _shard_qwen3(model: qwen3.Model, group: mx.distributed.Group, size: int) -> None:
    args = model.args
    _divides(args.num_attention_heads, size, "attention heads (num_attention_heads)")
    _divides(args.num_key_value_heads, size, "key/value heads (num_key_value_heads)")
    _divides(args.intermediate_size, size, "MLP width (intermediate_size)")
    for index, layer in enumerate(model.layers):
        attention, mlp = layer.self_attn, layer.mlp
        _check_row_split(attention.o_proj, size, f"layer {index} o_proj")
        _check_row_split(mlp.down_proj, size, f"layer {index} down_proj")
        for name in ("q_proj", "k_proj", "v_proj"):
            column = shard_linear(getattr(attention, name), "all-to-sharded", group=group)
            setattr(attention, name, column)
        attention.o_proj = shard_linear(attention.o_proj, "sharded-to-all", group=group)
        attention.n_heads //= size
        attention.n_kv_heads //= size
        mlp.gate_proj = shard_linear(mlp.gate_proj, "all-to-sharded", group=group)
        mlp.up_proj = shard_linear(mlp.up_proj, "all-to-sharded", group=group)
        mlp.down_proj = shard_linear(mlp.down_proj, "sharded-to-all", group=group)


# ------------------------------------------------------------------ Qwen3.5 dense hybrid


def _check_qwen3_5(model: qwen3_5.Model, size: int) -> None:
    """What mlx-lm's shard needs, as clear errors instead of its asserts and shape failures."""
    args = model.language_model.args
    _divides(args.num_attention_heads, size, "attention heads (num_attention_heads)")
    # mlx-lm repeats the KV heads when there are fewer than ranks; otherwise they must divide.
    if args.num_key_value_heads >= size:
        _divides(args.num_key_value_heads, size, "key/value heads (num_key_value_heads)")
    elif size % args.num_key_value_heads:
        raise TensorParallelError(
            f"The model's {args.num_key_value_heads} key/value heads can't be spread over "
            f"{size} ranks; use a group size they divide or that is a multiple of them."
        )
    _divides(args.linear_num_key_heads, size, "linear-attention key heads (linear_num_key_heads)")
    _divides(
        args.linear_num_value_heads, size, "linear-attention value heads (linear_num_value_heads)"
    )
    _divides(args.intermediate_size, size, "MLP width (intermediate_size)")
    if not args.tie_word_embeddings:
        _divides(args.vocab_size, size, "vocabulary (vocab_size)")
    for index, layer in enumerate(model.layers):
        if layer.is_linear:
            _check_row_split(layer.linear_attn.out_proj, size, f"layer {index} out_proj")
        else:
            _check_row_split(layer.self_attn.o_proj, size, f"layer {index} o_proj")
        _check_row_split(layer.mlp.down_proj, size, f"layer {index} down_proj")


# ------------------------------------------------------------------ checks


def _divides(count: int, size: int, what: str) -> None:
    if count % size:
        raise TensorParallelError(
            f"Tensor parallelism splits the model's {count} {what} evenly across the ranks, "
            f"and {count} is not divisible by {size}. Use a group size that divides {count}, "
            "or pipeline stages."
        )


def _check_row_split(layer: nn.Module, size: int, name: str) -> None:
    """A row-sharded quantized matrix splits its inputs: each rank's share must be whole
    quantization groups."""
    if not isinstance(layer, nn.QuantizedLinear):
        return
    inputs = layer.weight.shape[-1] * 32 // layer.bits
    if inputs % (size * layer.group_size):
        raise TensorParallelError(
            f"The {layer.bits}-bit {name} packs its {inputs} inputs in groups of "
            f"{layer.group_size}, which can't be split evenly across {size} ranks "
            f"({inputs // size} each). Use fewer ranks or pipeline stages."
        )


def _mx_group(
    group: Union[RankGroup, mx.distributed.Group, None],
) -> Optional[mx.distributed.Group]:
    return group.group if isinstance(group, RankGroup) else group


# ------------------------------------------------------------------ when it pays

Link = Literal["jaccl", "thunderbolt-ring", "ethernet-ring"]

# Rough per all-reduce latencies of a small message (a token's hidden state, a few kB), in
# seconds, for 2 ranks. They are assumptions, not measurements of a given setup: JACCL over
# Thunderbolt 5 RDMA is of the order of 10 us; the ring backend goes through TCP sockets,
# some 100 us over Thunderbolt bridge and a few hundred over Ethernet.
ALL_REDUCE_LATENCY_S: dict[str, float] = {
    "jaccl": 10e-6,
    "thunderbolt-ring": 100e-6,
    "ethernet-ring": 300e-6,
}
# Decoding one token reads every weight once: a Mac's memory bandwidth bounds its speed.
# ~400 GB/s is an M-series Max; Ultras are ~800, Pros ~200.
DEFAULT_MEMORY_BANDWIDTH = 400e9


def tensor_parallel_pays(
    config: Mapping[str, Any],
    group_size: int,
    link: str,
    *,
    memory_bandwidth: float = DEFAULT_MEMORY_BANDWIDTH,
) -> tuple[bool, str]:
    """Whether splitting this dense model by tensor parallelism across ``group_size`` Macs
    decodes faster than one Mac would, and why (a sentence for the planner).

    Tensor parallelism reads 1/N of the weights per token on each rank, saving
    (1 - 1/N) * weights / bandwidth, but costs two all-reduces per layer per token (after
    attention and after the MLP). Pipeline stages cost one hand-over per stage per token,
    so over the ring backend they are the default; tensor parallelism pays only when the
    saved reading time beats the all-reduces, which in practice means JACCL."""
    if link not in ALL_REDUCE_LATENCY_S:
        raise ValueError(f"link must be one of {', '.join(ALL_REDUCE_LATENCY_S)}, not {link!r}")
    if group_size < 2:
        return False, "One Mac: nothing to split."
    shape = ModelShape.from_config(config)
    if shape.model_type not in DENSE_MODEL_TYPES:
        return False, "Mixture-of-experts models read few weights per token: use pipeline stages."
    saved = (1 - 1 / group_size) * estimate_weights_bytes(config) / memory_bandwidth
    # A ring all-reduce takes 2(N-1) steps: N-1 times the 2-rank latency above.
    cost = 2 * shape.num_layers * (group_size - 1) * ALL_REDUCE_LATENCY_S[link]
    pays = saved > cost
    verdict = "pays" if pays else "does not pay"
    return pays, (
        f"Tensor parallelism over {link} {verdict}: it saves about {saved * 1e3:.1f} ms of "
        f"weight reading per token and costs about {cost * 1e3:.1f} ms of all-reduces "
        f"({2 * shape.num_layers} per token)."
    )
