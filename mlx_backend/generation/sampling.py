"""Sampling settings: Qwen3's recommended presets, request overrides, and mlx-lm samplers.

Qwen3's model cards warn that greedy decoding makes the models repeat themselves endlessly, so
the presets never sample greedily; a request may still ask for ``temperature=0`` explicitly
(tests and scripts want reproducible argmax output).
"""

from __future__ import annotations

import math
from typing import Optional, Sequence

import mlx.core as mx
from mlx_lm.sample_utils import LogitsProcessor, Sampler, make_logits_processors, make_sampler

from mlx_backend.errors import RequestError
from mlx_backend.events import SamplingParams

# From the Qwen3 model cards ("Best Practices"): thinking and non-thinking mode differ.
THINKING_PRESET = SamplingParams(temperature=0.6, top_p=0.95, top_k=20, min_p=0.0)
NON_THINKING_PRESET = SamplingParams(temperature=0.7, top_p=0.8, top_k=20, min_p=0.0)

# How many recent tokens the presence penalty looks at. mlx-lm's default (20) only covers the
# last sentence; Qwen's guidance targets repetition loops across a whole answer.
PRESENCE_PENALTY_CONTEXT = 1024


def preset_for(thinking: bool) -> SamplingParams:
    """Qwen3's recommended sampling settings for the thinking mode in effect."""
    return THINKING_PRESET if thinking else NON_THINKING_PRESET


def resolve_sampling(requested: Optional[SamplingParams], thinking: bool) -> SamplingParams:
    """The request's own settings if it has any (validated), else the preset for the mode."""
    params = requested if requested is not None else preset_for(thinking)
    validate_sampling(params)
    return params


def validate_sampling(params: SamplingParams) -> None:
    """Raise RequestError with a plain sentence for settings the samplers would reject."""
    checks = (
        (_finite(params.temperature) and params.temperature >= 0,
         f"Temperature must be 0 or more, not {params.temperature}."),
        (_finite(params.top_p) and 0 < params.top_p <= 1,
         f"Top-p must be above 0 and at most 1, not {params.top_p}."),
        (isinstance(params.top_k, int) and params.top_k >= 0,
         f"Top-k must be a whole number, 0 (off) or more, not {params.top_k}."),
        (_finite(params.min_p) and 0 <= params.min_p <= 1,
         f"Min-p must be between 0 and 1, not {params.min_p}."),
        (_finite(params.presence_penalty) and -2 <= params.presence_penalty <= 2,
         f"Presence penalty must be between -2 and 2, not {params.presence_penalty}."),
    )
    for ok, message in checks:
        if not ok:
            raise RequestError(message)


def make_request_sampler(params: SamplingParams, vocab_size: int) -> Sampler:
    """mlx-lm's sampler chain for ``params`` (argmax when the temperature is 0)."""
    # apply_top_k rejects k >= vocabulary size; such a k keeps everything anyway.
    top_k = params.top_k if 0 < params.top_k < vocab_size else 0
    return make_sampler(
        temp=params.temperature, top_p=params.top_p, min_p=params.min_p, top_k=top_k
    )


def make_request_logits_processors(
    params: SamplingParams, prefilled: Sequence[int] = ()
) -> list[LogitsProcessor]:
    """The presence penalty as an mlx-lm logits processor (none when it is 0).

    ``generate_step`` shows its processors only the tokens it was given itself. The engine
    prefills all of the prompt but its last token beforehand, so those ``prefilled`` ids are put
    back in front: the penalty sees the same context as in a one-pass run over the whole prompt.
    """
    processors = make_logits_processors(
        presence_penalty=params.presence_penalty or None,
        presence_context_size=PRESENCE_PENALTY_CONTEXT,
    )
    if not processors or not prefilled:
        return processors
    before = mx.array(list(prefilled[-PRESENCE_PENALTY_CONTEXT:]))

    def with_prefilled(processor: LogitsProcessor) -> LogitsProcessor:
        return lambda tokens, logits: processor(mx.concatenate([before, tokens]), logits)

    return [with_prefilled(processor) for processor in processors]


def seed_random(seed: Optional[int]) -> None:
    """Make sampling reproducible: the same seed, prompt and settings give the same tokens."""
    if seed is not None:
        mx.random.seed(seed)


def validate_seed(seed: Optional[int]) -> None:
    """Raise RequestError unless ``seed`` is None or a whole number mx.random.seed accepts."""
    if seed is not None and (not isinstance(seed, int) or seed < 0):
        raise RequestError(f"The seed must be a whole number, 0 or more, not {seed!r}.")


def _finite(value: float) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)
