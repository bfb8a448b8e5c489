"""Memory planning: will this model and context fit this machine, and with what settings?

The estimate is arithmetic on ``config.json`` alone (no weights read), so the model manager can
warn before a download or a load. Weights: every matrix at its quantized size (packed bits plus
per-group scales/biases) or at the checkpoint dtype; MoE models keep every expert resident.
KV cache: two tensors (K and V) per layer of ``kv_heads x head_dim`` values per token.

The budget is what MLX may keep resident: on Apple Silicon Metal's recommended working set
(the GPU can't page beyond it without a big slowdown), elsewhere a share of physical memory.
Every Metal-only call is guarded so the same code runs on Linux's CPU backend.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping, Optional, Union

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from mlx_backend.errors import ModelLoadError
from mlx_backend.models.limits import KV_GROUP_SIZE

Verdict = Literal["fits", "tight", "wont_fit"]

GB = 1e9
# mlx-lm's KVCache grows in steps of 256 positions; a context is allocated in whole steps.
KV_ALLOCATION_STEP = 256
# Prefill activations, logits and allocator slack beyond weights and KV cache (a rule of thumb:
# a 2048-token prefill chunk of the largest Qwen3 needs a few hundred MB).
RUNTIME_OVERHEAD_BYTES = 512 * 2**20
# Above this share of the budget the model runs but leaves little for the rest of the Mac.
TIGHT_FRACTION = 0.8
# Without Metal's recommendation, leave a quarter of physical memory to the OS and other apps.
NON_METAL_BUDGET_FRACTION = 0.75

_DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
# Microscaling formats store one 8-bit scale per group and no bias.
_SCALE_ONLY_MODES = {"mxfp4": 1, "mxfp8": 1, "nvfp4": 1}


@dataclass(frozen=True)
class MemoryBudget:
    bytes: int
    source: str  # where the figure comes from, shown in messages


@dataclass(frozen=True)
class MemoryPlan:
    weights_bytes: int
    kv_cache_bytes: int
    overhead_bytes: int
    budget_bytes: int
    budget_source: str
    context_tokens: int
    kv_bits: Optional[int]
    verdict: Verdict
    message: str
    suggestions: tuple[str, ...] = ()

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.overhead_bytes

    @property
    def fits(self) -> bool:
        return self.verdict != "wont_fit"


@dataclass(frozen=True)
class _Matrix:
    """``count`` matrices of ``rows x cols`` under one module path (MoE experts are stacked)."""

    path: str
    rows: int
    cols: int
    count: int = 1

    @property
    def params(self) -> int:
        return self.rows * self.cols * self.count


# ---------------------------------------------------------------- config arithmetic


def load_config(config_or_path: Union[Mapping[str, Any], str, os.PathLike]) -> dict[str, Any]:
    """A config dict from a dict, a model folder or a ``config.json`` path."""
    if isinstance(config_or_path, Mapping):
        return dict(config_or_path)
    path = Path(config_or_path)
    if path.is_dir():
        path = path / "config.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise ModelLoadError(f"Could not read the model configuration {path}: {error}") from None


def weight_dtype_bytes(config: Mapping[str, Any]) -> int:
    """Bytes per unquantized value (norms, unquantized matrices, scales, activations, KV)."""
    name = str(config.get("torch_dtype") or config.get("dtype") or "bfloat16")
    return _DTYPE_BYTES.get(name.replace("torch.", ""), 2)


def _quantization(config: Mapping[str, Any]) -> Optional[Mapping[str, Any]]:
    # mlx-lm writes "quantization"; HF-style "quantization_config" only counts if it is MLX's.
    for key in ("quantization", "quantization_config"):
        q = config.get(key)
        if isinstance(q, Mapping) and "bits" in q and "group_size" in q:
            return q
    return None


def _head_dim(config: Mapping[str, Any]) -> int:
    return int(config.get("head_dim") or config["hidden_size"] // config["num_attention_heads"])


def _is_sparse_layer(config: Mapping[str, Any], index: int) -> bool:
    experts = int(config.get("num_experts") or 0)
    step = int(config.get("decoder_sparse_step") or 1)
    return (
        experts > 0
        and index not in (config.get("mlp_only_layers") or ())
        and (index + 1) % step == 0
    )


def _matrices(config: Mapping[str, Any]) -> Iterator[_Matrix]:
    """Every quantizable matrix of a Qwen3 (dense or MoE) model, by MLX module path."""
    hidden = int(config["hidden_size"])
    vocab = int(config["vocab_size"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = _head_dim(config)
    yield _Matrix("model.embed_tokens", vocab, hidden)
    for i in range(int(config["num_hidden_layers"])):
        attn = f"model.layers.{i}.self_attn"
        yield _Matrix(f"{attn}.q_proj", heads * head_dim, hidden)
        yield _Matrix(f"{attn}.k_proj", kv_heads * head_dim, hidden)
        yield _Matrix(f"{attn}.v_proj", kv_heads * head_dim, hidden)
        yield _Matrix(f"{attn}.o_proj", hidden, heads * head_dim)
        mlp = f"model.layers.{i}.mlp"
        if _is_sparse_layer(config, i):
            experts = int(config["num_experts"])
            inner = int(config["moe_intermediate_size"])
            yield _Matrix(f"{mlp}.gate", experts, hidden)
            yield _Matrix(f"{mlp}.switch_mlp.gate_proj", inner, hidden, experts)
            yield _Matrix(f"{mlp}.switch_mlp.up_proj", inner, hidden, experts)
            yield _Matrix(f"{mlp}.switch_mlp.down_proj", hidden, inner, experts)
        else:
            inner = int(config["intermediate_size"])
            yield _Matrix(f"{mlp}.gate_proj", inner, hidden)
            yield _Matrix(f"{mlp}.up_proj", inner, hidden)
            yield _Matrix(f"{mlp}.down_proj", hidden, inner)
    if not config.get("tie_word_embeddings", False):
        yield _Matrix("lm_head", vocab, hidden)


def _small_params(config: Mapping[str, Any]) -> int:
    """Values that always stay unquantized: RMSNorm weights and optional attention biases."""
    hidden = int(config["hidden_size"])
    heads = int(config["num_attention_heads"])
    kv_heads = int(config.get("num_key_value_heads") or heads)
    head_dim = _head_dim(config)
    per_layer = 2 * hidden + 2 * head_dim  # input/post-attention norms, q_norm, k_norm
    if config.get("attention_bias"):
        per_layer += (heads + 2 * kv_heads) * head_dim + hidden
    return int(config["num_hidden_layers"]) * per_layer + hidden  # + final norm


def count_parameters(config: Mapping[str, Any]) -> int:
    """All parameters, every expert included (what must be resident, not what is active)."""
    return sum(m.params for m in _matrices(config)) + _small_params(config)


def quantized_matrix_bytes(
    params: int, *, bits: int, group_size: int, scale_bytes: int, mode: str = "affine"
) -> int:
    """Packed values plus per-group scales (and biases, for MLX's default affine mode)."""
    groups = params // group_size
    if mode in _SCALE_ONLY_MODES:
        per_group = _SCALE_ONLY_MODES[mode]
    else:
        per_group = 2 * scale_bytes  # one scale and one bias per group
    return params * bits // 8 + groups * per_group


def estimate_weights_bytes(config: Mapping[str, Any]) -> int:
    """Resident bytes of the weights described by ``config`` (quantized or not)."""
    dtype_bytes = weight_dtype_bytes(config)
    small = _small_params(config) * dtype_bytes
    quant = _quantization(config)
    if quant is None:
        return sum(m.params for m in _matrices(config)) * dtype_bytes + small
    total = small
    for matrix in _matrices(config):
        # mlx-lm records per-module exceptions (e.g. 8-bit MoE routers) under the module path.
        override = quant.get(matrix.path)
        if override is False:  # left unquantized
            total += matrix.params * dtype_bytes
            continue
        settings = override if isinstance(override, Mapping) else quant
        bits = int(settings.get("bits", quant["bits"]))
        group_size = int(settings.get("group_size", quant["group_size"]))
        if matrix.cols % group_size:  # nn.quantize skips what doesn't split into groups
            total += matrix.params * dtype_bytes
            continue
        total += quantized_matrix_bytes(
            matrix.params,
            bits=bits,
            group_size=group_size,
            scale_bytes=dtype_bytes,
            mode=str(settings.get("mode", quant.get("mode", "affine"))),
        )
    return total


def kv_bytes_per_token(config: Mapping[str, Any], kv_bits: Optional[int] = None) -> float:
    """Bytes the KV cache needs per context position, all layers, K and V."""
    kv_heads = int(config.get("num_key_value_heads") or config["num_attention_heads"])
    values_per_token = int(config["num_hidden_layers"]) * kv_heads * _head_dim(config) * 2
    dtype_bytes = weight_dtype_bytes(config)
    if kv_bits is None:
        return float(values_per_token * dtype_bytes)
    # QuantizedKVCache: packed values plus a scale and a bias per group, in the activation dtype.
    return values_per_token * (kv_bits / 8 + 2 * dtype_bytes / KV_GROUP_SIZE)


def estimate_kv_cache_bytes(
    config: Mapping[str, Any], context_tokens: int, kv_bits: Optional[int] = None
) -> int:
    allocated = math.ceil(context_tokens / KV_ALLOCATION_STEP) * KV_ALLOCATION_STEP
    return int(allocated * kv_bytes_per_token(config, kv_bits))


# ---------------------------------------------------------------- the machine


def _device_info() -> dict[str, Any]:
    try:
        return dict(mx.device_info())
    except Exception:  # older MLX or a backend without device queries
        return {}


def physical_memory_bytes() -> Optional[int]:
    try:
        return int(os.sysconf("SC_PAGE_SIZE")) * int(os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        return None


def memory_budget() -> MemoryBudget:
    """How much memory MLX should plan to use on this machine."""
    recommended = _device_info().get("max_recommended_working_set_size")
    if recommended:
        return MemoryBudget(int(recommended), "the GPU's recommended working set")
    physical = physical_memory_bytes()
    if physical:
        return MemoryBudget(int(physical * NON_METAL_BUDGET_FRACTION), "75% of physical memory")
    return MemoryBudget(0, "unknown")


# ---------------------------------------------------------------- the verdict


def plan_memory(
    config: Union[Mapping[str, Any], str, os.PathLike],
    context_tokens: int,
    kv_bits: Optional[int] = None,
    budget_bytes: Optional[int] = None,
) -> MemoryPlan:
    """Estimate weights + KV cache for ``context_tokens`` against the memory budget."""
    config = load_config(config)
    if context_tokens <= 0:
        raise ValueError(f"context_tokens must be positive, not {context_tokens}")
    if kv_bits not in (None, 4, 8):
        raise ValueError(f"kv_bits must be None, 8 or 4, not {kv_bits}")
    if budget_bytes is None:
        budget = memory_budget()
    else:
        budget = MemoryBudget(int(budget_bytes), "the given budget")

    weights = estimate_weights_bytes(config)
    kv = estimate_kv_cache_bytes(config, context_tokens, kv_bits)
    total = weights + kv + RUNTIME_OVERHEAD_BYTES
    verdict = _verdict(total, budget.bytes)

    suggestions: list[str] = []
    if verdict != "fits":
        suggestions = _suggestions(config, context_tokens, kv_bits, weights, kv, budget.bytes)
    summary = (
        f"Needs about {_gb(total)} (weights {_gb(weights)} + KV cache {_gb(kv)} for "
        f"{context_tokens:,} tokens{_kv_label(kv_bits)} + {_gb(RUNTIME_OVERHEAD_BYTES)} working "
        f"memory) of {_gb(budget.bytes)} available ({budget.source}): {_VERDICT_WORDS[verdict]}."
    )
    message = " ".join([summary, *suggestions])
    return MemoryPlan(
        weights_bytes=weights,
        kv_cache_bytes=kv,
        overhead_bytes=RUNTIME_OVERHEAD_BYTES,
        budget_bytes=budget.bytes,
        budget_source=budget.source,
        context_tokens=context_tokens,
        kv_bits=kv_bits,
        verdict=verdict,
        message=message,
        suggestions=tuple(suggestions),
    )


_VERDICT_WORDS = {
    "fits": "fits",
    "tight": "tight, it will run but leaves little memory for other apps",
    "wont_fit": "won't fit",
}


def _verdict(total: int, budget: int) -> Verdict:
    if total > budget:
        return "wont_fit"
    if total > TIGHT_FRACTION * budget:
        return "tight"
    return "fits"


def _suggestions(
    config: Mapping[str, Any],
    context_tokens: int,
    kv_bits: Optional[int],
    weights: int,
    kv: int,
    budget: int,
) -> list[str]:
    tips: list[str] = []
    for smaller_bits in (8, 4):
        if kv_bits is not None and smaller_bits >= kv_bits:
            continue
        smaller_kv = estimate_kv_cache_bytes(config, context_tokens, smaller_bits)
        if _verdict(weights + smaller_kv + RUNTIME_OVERHEAD_BYTES, budget) != "wont_fit":
            article = "An" if smaller_bits == 8 else "A"
            tips.append(
                f"{article} {smaller_bits}-bit KV cache needs {_gb(smaller_kv)} instead of {_gb(kv)} "
                f"and would {_verdict_phrase(weights + smaller_kv, budget)}."
            )
            break
    room = budget * TIGHT_FRACTION - weights - RUNTIME_OVERHEAD_BYTES
    per_token = kv_bytes_per_token(config, kv_bits)
    if room > per_token * KV_ALLOCATION_STEP:
        longest = int(room // per_token) // KV_ALLOCATION_STEP * KV_ALLOCATION_STEP
        if longest < context_tokens:
            tips.append(f"A context of up to {longest:,} tokens fits comfortably.")
    if weights + RUNTIME_OVERHEAD_BYTES > budget * TIGHT_FRACTION:
        quant = _quantization(config)
        if quant is None or int(quant["bits"]) > 4:
            tips.append(
                f"The weights alone need {_gb(weights)}: choose a 4-bit version or a smaller model."
            )
        else:
            tips.append(f"The weights alone need {_gb(weights)}: choose a smaller model.")
    return tips


def _verdict_phrase(weights_and_kv: int, budget: int) -> str:
    verdict = _verdict(weights_and_kv + RUNTIME_OVERHEAD_BYTES, budget)
    return "fit" if verdict == "fits" else "fit, tightly"


def _kv_label(kv_bits: Optional[int]) -> str:
    return f" at {kv_bits}-bit" if kv_bits else ""


def _gb(n: float) -> str:
    return f"{n / GB:.1f} GB"


# ---------------------------------------------------------------- runtime helpers


def model_nbytes(model: nn.Module) -> int:
    """Bytes of every array the loaded model holds (its resident weights)."""
    return sum(v.nbytes for _, v in tree_flatten(model.parameters()))


def reset_peak_memory() -> None:
    with contextlib.suppress(Exception):
        mx.reset_peak_memory()


def peak_memory_bytes() -> int:
    """Highest MLX allocation since the last reset (0 where the backend can't tell)."""
    try:
        return int(mx.get_peak_memory())
    except Exception:
        return 0


@contextlib.contextmanager
def wired_limit(streams: tuple[Any, ...] = ()) -> Iterator[None]:
    """Let Metal wire up to its recommended working set while generating, like mlx-lm does.

    Wired memory can't be paged out, so weights stay resident between tokens. A no-op where
    the device reports no recommended size (CPU backend, Linux).
    """
    recommended = _device_info().get("max_recommended_working_set_size")
    if not recommended:
        yield
        return
    try:
        previous = mx.set_wired_limit(int(recommended))
    except Exception:
        yield
        return
    try:
        yield
    finally:
        # The limit must not change under an in-flight asynchronous evaluation.
        with contextlib.suppress(Exception):
            for stream in streams:
                mx.synchronize(stream)
            if not streams:
                mx.synchronize()
        with contextlib.suppress(Exception):
            mx.set_wired_limit(previous)
