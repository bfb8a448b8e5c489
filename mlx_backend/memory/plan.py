"""The memory plan: will this model and context fit this machine, and with what settings?

Weights + KV cache for the context + working memory, against the machine's budget, from
``config.json`` alone (no weights read), so the model manager can warn before a download or a
load. The verdict comes with its figures and, when it isn't a comfortable fit, what would help.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Literal, Mapping, Optional, Union

from mlx_backend.loading.loader import quantization_settings, read_config
from mlx_backend.memory.device import MemoryBudget, memory_budget
from mlx_backend.memory.sizes import (
    GB,
    KV_ALLOCATION_STEP,
    estimate_kv_cache_bytes,
    estimate_linear_state_bytes,
    estimate_weights_bytes,
    kv_bytes_per_token,
    weight_parts,
)
from mlx_backend.distributed.stages import stage_layers
from mlx_backend.models.shape import ModelShape

Verdict = Literal["fits", "tight", "wont_fit"]

# The most Macs the planner will suggest: past this a ring's per-token hops dominate.
MAX_GROUP_MACS = 8

# Prefill activations, logits and allocator slack beyond weights and KV cache (a rule of thumb:
# a 2048-token prefill chunk of the largest Qwen3 needs a few hundred MB).
RUNTIME_OVERHEAD_BYTES = 512 * 2**20
# Above this share of the budget the model runs but leaves little for the rest of the Mac.
TIGHT_FRACTION = 0.8


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
    # A hybrid's linear-attention layers keep a fixed-size state instead of a KV cache.
    linear_state_bytes: int = 0

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.linear_state_bytes + self.overhead_bytes

    @property
    def fits(self) -> bool:
        return self.verdict != "wont_fit"


def plan_memory(
    config: Union[Mapping[str, Any], str, os.PathLike],
    context_tokens: int,
    kv_bits: Optional[int] = None,
    budget_bytes: Optional[int] = None,
) -> MemoryPlan:
    """Estimate weights + KV cache for ``context_tokens`` against the memory budget.

    ``config`` is a config dict, a model folder or a config.json path.
    """
    config = read_config(config)
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
    state = estimate_linear_state_bytes(config)
    # The fixed costs: what the context doesn't change (the linear state counts like weights).
    fixed = weights + state
    total = fixed + kv + RUNTIME_OVERHEAD_BYTES
    verdict = _verdict(total, budget.bytes)

    suggestions: list[str] = []
    if verdict != "fits":
        suggestions = _suggestions(config, context_tokens, kv_bits, weights, kv, budget.bytes, state)
    if verdict == "wont_fit":
        group = smallest_group(config, context_tokens, kv_bits, budget.bytes)
        if group is not None:
            suggestions.append(group.suggestion)
    state_label = f" + linear-attention state {_gb(state)}" if state else ""
    summary = (
        f"Needs about {_gb(total)} (weights {_gb(weights)} + KV cache {_gb(kv)} for "
        f"{context_tokens:,} tokens{_kv_label(kv_bits)}{state_label} + "
        f"{_gb(RUNTIME_OVERHEAD_BYTES)} working memory) of {_gb(budget.bytes)} available "
        f"({budget.source}): {_VERDICT_WORDS[verdict]}."
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
        linear_state_bytes=state,
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
    config: dict[str, Any],
    context_tokens: int,
    kv_bits: Optional[int],
    weights: int,
    kv: int,
    budget: int,
    state: int = 0,
) -> list[str]:
    tips: list[str] = []
    fixed = weights + state
    for smaller_bits in (8, 4):
        if kv_bits is not None and smaller_bits >= kv_bits:
            continue
        smaller_kv = estimate_kv_cache_bytes(config, context_tokens, smaller_bits)
        if _verdict(fixed + smaller_kv + RUNTIME_OVERHEAD_BYTES, budget) != "wont_fit":
            article = "An" if smaller_bits == 8 else "A"
            tips.append(
                f"{article} {smaller_bits}-bit KV cache needs {_gb(smaller_kv)} instead of {_gb(kv)} "
                f"and would {_verdict_phrase(fixed + smaller_kv, budget)}."
            )
            break
    room = budget * TIGHT_FRACTION - fixed - RUNTIME_OVERHEAD_BYTES
    per_token = kv_bytes_per_token(config, kv_bits)
    if room > per_token * KV_ALLOCATION_STEP:
        longest = int(room // per_token) // KV_ALLOCATION_STEP * KV_ALLOCATION_STEP
        if longest < context_tokens:
            tips.append(f"A context of up to {longest:,} tokens fits comfortably.")
    if fixed + RUNTIME_OVERHEAD_BYTES > budget * TIGHT_FRACTION:
        quantization = quantization_settings(config)
        if quantization is None or int(quantization["bits"]) > 4:
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


@dataclass(frozen=True)
class StageShare:
    """What one Mac of a pipeline holds: its layers' weights, their KV cache and linear state."""

    rank: int
    layers: range
    weights_bytes: int
    kv_cache_bytes: int
    linear_state_bytes: int
    overhead_bytes: int = RUNTIME_OVERHEAD_BYTES

    @property
    def total_bytes(self) -> int:
        return self.weights_bytes + self.kv_cache_bytes + self.linear_state_bytes + self.overhead_bytes

    @property
    def layers_label(self) -> str:
        return f"layers {self.layers.start}-{self.layers.stop - 1}" if len(self.layers) > 1 else f"layer {self.layers.start}"


@dataclass(frozen=True)
class GroupPlan:
    """The model split by layers over ``hosts`` Macs with ``budget_bytes`` available on each."""

    hosts: int
    stages: tuple[StageShare, ...]
    budget_bytes: int
    context_tokens: int
    verdict: Verdict  # the fullest Mac's
    message: str

    @property
    def largest_share_bytes(self) -> int:
        return max(stage.total_bytes for stage in self.stages)

    @property
    def fits(self) -> bool:
        return self.verdict != "wont_fit"

    @property
    def suggestion(self) -> str:
        return (
            f"It would fit on {self.hosts} Macs with {_gb(self.budget_bytes)} available like this one "
            f"(about {_gb(self.largest_share_bytes)} on each, split by layers) with qwen-desk serve --hosts."
        )


def plan_group(
    config: Union[Mapping[str, Any], str, os.PathLike],
    hosts: int,
    context_tokens: int,
    kv_bits: Optional[int] = None,
    budget_bytes: Optional[int] = None,
) -> GroupPlan:
    """What each of ``hosts`` Macs holds when the model's layers are split into pipeline stages
    (``mlx_backend.distributed.pipeline``), each against a budget like this Mac's (or the given one).

    Every Mac keeps the embedding, the final norm and the head (every rank finishes each step's
    logits); the layers split as ``stages.stage_layers`` in the pipeline's order (Mac 1, rank 0,
    holds the last layers). Each keeps the KV cache and linear state of its own layers and its
    own working memory.
    """
    config = read_config(config)
    if context_tokens <= 0:
        raise ValueError(f"context_tokens must be positive, not {context_tokens}")
    budget = memory_budget().bytes if budget_bytes is None else int(budget_bytes)
    parts = weight_parts(config)
    shape = ModelShape.from_config(config)
    kv_per_layer = estimate_kv_cache_bytes(config, context_tokens, kv_bits) / max(len(shape.attention_layers), 1)
    state_per_layer = estimate_linear_state_bytes(config) / max(len(shape.linear_layers), 1)
    attention = set(shape.attention_layers)
    stages = []
    ranges = stage_layers(len(parts.layer_bytes), hosts)
    for rank in range(hosts):
        layers = ranges[hosts - 1 - rank]
        weights = parts.embedding_bytes + parts.head_bytes + sum(parts.layer_bytes[i] for i in layers)
        kv_layers = sum(1 for i in layers if i in attention)
        stages.append(StageShare(
            rank=rank,
            layers=layers,
            weights_bytes=weights,
            kv_cache_bytes=int(kv_layers * kv_per_layer),
            linear_state_bytes=int((len(layers) - kv_layers) * state_per_layer),
        ))
    worst = max(stages, key=lambda stage: stage.total_bytes)
    verdict = _verdict(worst.total_bytes, budget)
    holds = "; ".join(f"Mac {s.rank + 1}: {s.layers_label}, {_gb(s.total_bytes)}" for s in stages)
    message = (
        f"On {hosts} Macs with {_gb(budget)} available each, split by layers for a "
        f"{context_tokens:,}-token context: {holds}. {_VERDICT_WORDS[verdict].capitalize()}."
    )
    return GroupPlan(hosts, tuple(stages), budget, context_tokens, verdict, message)


def smallest_group(
    config: Mapping[str, Any],
    context_tokens: int,
    kv_bits: Optional[int],
    budget_bytes: int,
    max_hosts: int = MAX_GROUP_MACS,
) -> Optional[GroupPlan]:
    """The fewest Macs like this one (2 or more) the model fits on, or None within ``max_hosts``."""
    layers = ModelShape.from_config(config).num_layers
    for hosts in range(2, min(max_hosts, layers) + 1):
        group = plan_group(config, hosts, context_tokens, kv_bits, budget_bytes)
        if group.fits:
            return group
    return None
