"""Speculative decoding: a drafter guesses the next tokens, the target checks them in one pass.

A drafter proposes up to ``k`` tokens after the tokens so far (``Drafter.propose``); the target
model runs over the last token plus the proposals at once (one forward pass for ``k + 1``
positions), samples every position with the request's own sampler, and keeps proposals only
while each equals the target's own sample at its position, then the target's sample after the
last kept one. Every token that comes out is therefore the target's sample given exactly the
tokens before it: greedy output is token-identical to plain decoding, sampled output has the
target's distribution (as in mlx-lm's ``speculative_generate_step``, whose rule this is).

Two drafters:

- ``DraftModelDrafter``: a small model of the same tokenizer (Qwen3-0.6B for a larger Qwen3),
  with its own KV cache that follows the accepted tokens (trimmed back to the common prefix
  on every call, so rejected guesses never linger).
- ``PromptLookupDrafter``: no model at all; the tokens that followed the latest earlier
  occurrence of the last few tokens in the prompt or the answer. Answers that quote a pasted
  document accept long runs; where nothing matches it proposes nothing (a plain step).

``speculative_steps`` yields the same ``(token, logprobs)`` steps as mlx-lm's ``generate_step``,
with the same cache contract (when a token is out, the cache holds it; see ``decode.py``), so
stop strings, thinking, tool calls and cancel work unchanged. The number of drafted tokens
follows the recent acceptance, and if drafted steps turn out slower per token than plain ones
the rest of the answer is decoded plainly by ``generate_step`` itself.

Only trimmable caches: a hybrid model's linear-attention state (Qwen3.5, Qwen3-Next) can't be
taken back by the rejected tokens, so the engine decodes those plainly (see ``can_speculate``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Protocol, Sequence

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.generate import generate_step, generation_stream, maybe_quantize_kv_cache
from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache
from mlx_lm.sample_utils import LogitsProcessor, Sampler

from mlx_backend.generation.prompt_cache import LayerCaches, common_prefix_length

TokenStep = tuple[int, mx.array]

# Tokens the draft model prefills at once when it catches up with a long prompt.
DRAFT_PREFILL_CHUNK = 512
# Emitted tokens between two checks of "does drafting pay" (timing drafted vs plain steps).
WINDOW_TOKENS = 16
# Plain steps timed at the start (after one warm-up step) as the speed to beat.
CALIBRATION_STEPS = 3
# How far back the presence penalty looks (sampling.PRESENCE_PENALTY_CONTEXT).
PROCESSOR_CONTEXT = 1024


class Drafter(Protocol):
    kind: str  # "draft-model" or "prompt-lookup", shown in the stats

    def propose(self, tokens: Sequence[int], k: int) -> list[int]:
        """Up to ``k`` guesses for the tokens after ``tokens`` (every one of them final)."""

    def close(self) -> None:
        """The answer is over (book-keeping only)."""


def can_speculate(layers: LayerCaches) -> bool:
    """Verification trims rejected tokens off the cache: it must be trimmable."""
    return can_trim_prompt_cache(layers)


class DraftModelDrafter:
    """A small model's greedy guesses, its cache kept in step with the accepted tokens."""

    kind = "draft-model"

    def __init__(
        self,
        model: nn.Module,
        layers: LayerCaches,
        held: Sequence[int],
        *,
        kv_bits: Optional[int] = None,
        kv_group_size: int = 64,
    ):
        self.model = model
        self.layers = layers
        self.held = list(held)  # the tokens ``layers`` hold, position by position
        self._kv = dict(quantized_kv_start=0, kv_group_size=kv_group_size, kv_bits=kv_bits)

    def catch_up(self, tokens: Sequence[int]) -> None:
        """Bring the cache to hold ``tokens[:-1]`` (the draft's own prefill, before decoding)."""
        todo = self._rewind_to(tokens)[:-1]
        with mx.stream(generation_stream):
            while todo:
                self._feed(todo[:DRAFT_PREFILL_CHUNK])
                mx.eval([c.state for c in self.layers])
                todo = todo[DRAFT_PREFILL_CHUNK:]

    def propose(self, tokens: Sequence[int], k: int) -> list[int]:
        if len(tokens) - common_prefix_length(self.held, tokens) > DRAFT_PREFILL_CHUNK:
            self.catch_up(tokens)  # a long way behind: in chunks, like a prefill
        # Rejected guesses of the last call go; accepted tokens since are fed in one call.
        todo = self._rewind_to(tokens)
        with mx.stream(generation_stream):
            y = self._feed(todo)
            drafts = [y]
            for _ in range(k - 1):
                y = self._feed_array(y)
                drafts.append(y)
            out = mx.concatenate(drafts).tolist()
        # The last guess is not fed: the next call feeds whatever the target kept instead.
        self.held.extend(out[:-1])
        return out

    def _rewind_to(self, tokens: Sequence[int]) -> list[int]:
        """Trim to the common prefix with ``tokens`` (leaving one to feed); what remains to feed."""
        keep = min(common_prefix_length(self.held, tokens), len(tokens) - 1)
        if keep < len(self.held):
            trim_prompt_cache(self.layers, len(self.held) - keep)
        self.held = list(tokens[:keep])
        return list(tokens[keep:])

    def _feed(self, tokens: list[int]) -> mx.array:
        self.held.extend(tokens)
        return self._feed_array(mx.array(tokens, mx.uint32))

    def _feed_array(self, tokens: mx.array) -> mx.array:
        logits = self.model(tokens[None], cache=self.layers)[:, -1, :]
        maybe_quantize_kv_cache(self.layers, **self._kv)
        y = mx.argmax(logits, axis=-1)
        mx.async_eval(y)
        return y

    def close(self) -> None:
        pass


class PromptLookupDrafter:
    """Guesses by n-gram lookup: what followed the last ``n`` tokens the last time they occurred.

    An index from each n-gram to the position after its latest occurrence grows with the
    tokens, so a lookup costs the same however long the document is.
    """

    kind = "prompt-lookup"

    def __init__(self, ngram_sizes: Sequence[int] = (4, 3, 2)):
        self.sizes = tuple(sorted(ngram_sizes, reverse=True))
        self._index: dict[tuple[int, ...], int] = {}
        self._tokens: list[int] = []
        self._indexed = 0  # positions p (< len(tokens)) whose n-grams ending at p are indexed

    def propose(self, tokens: Sequence[int], k: int) -> list[int]:
        self._extend(tokens)
        seen = self._tokens
        for n in self.sizes:
            if len(seen) <= n:
                continue
            after = self._index.get(tuple(seen[-n:]))
            if after is not None:
                return seen[after : after + k]
        return []

    def _extend(self, tokens: Sequence[int]) -> None:
        if len(tokens) < len(self._tokens):
            self.__init__(self.sizes)  # another sequence: start over
        self._tokens = list(tokens)
        # An n-gram ending at p is indexed only once position p exists (it has a continuation),
        # so the current suffix never finds itself.
        for p in range(max(self._indexed, 1), len(self._tokens)):
            for n in self.sizes:
                if p >= n:
                    self._index[tuple(self._tokens[p - n : p])] = p
        self._indexed = len(self._tokens)

    def close(self) -> None:
        pass


@dataclass
class SpeculationStats:
    """What drafting did in one answer, for GenerationStats."""

    kind: str
    drafted: int = 0
    accepted: int = 0
    fell_back: bool = False
    plain_s_per_token: Optional[float] = None
    drafted_s_per_token: Optional[float] = None

    @property
    def speedup(self) -> Optional[float]:
        """Measured plain time per token over drafted time per token (>1: drafting paid)."""
        if not self.plain_s_per_token or not self.drafted_s_per_token:
            return None
        return self.plain_s_per_token / self.drafted_s_per_token


class DraftLength:
    """How many tokens to draft next: grows while everything is accepted, shrinks on misses."""

    def __init__(self, fixed: Optional[int], start: int, most: int):
        self.fixed = fixed
        self.k = fixed if fixed is not None else start
        self.most = most

    def update(self, drafted: int, accepted: int) -> None:
        if self.fixed is not None or drafted == 0:
            return
        if accepted == drafted:
            self.k = min(self.k + 1, self.most)
        elif accepted < drafted // 2:
            self.k = max(1, min(self.k - 1, accepted + 1))


def speculative_steps(
    model: nn.Module,
    layers: LayerCaches,
    tokens: Sequence[int],
    drafter: Drafter,
    *,
    sampler: Sampler,
    logits_processors: Sequence[LogitsProcessor] = (),
    processors_for: Callable[[Sequence[int]], list[LogitsProcessor]] = lambda _: [],
    max_tokens: int,
    stats: SpeculationStats,
    num_draft: Optional[int] = None,
    kv_bits: Optional[int] = None,
    kv_group_size: int = 64,
    calibration_steps: int = CALIBRATION_STEPS,
) -> Iterator[TokenStep]:
    """Decode from ``layers``, which hold ``tokens[:-1]``, like ``generate_step(tokens[-1:])``.

    ``logits_processors`` take the full context (tokens so far) and the logits of one position;
    ``processors_for(prefilled)`` makes generate_step-style processors for the plain fallback.
    Steps up to ``calibration_steps`` are plain (the first a warm-up), timed as the speed to beat.
    """
    history = list(tokens)
    kv = dict(quantized_kv_start=0, kv_group_size=kv_group_size, kv_bits=kv_bits)
    is_lookup = drafter.kind == "prompt-lookup"
    length = DraftLength(num_draft, start=4 if is_lookup else 3, most=10 if is_lookup else 8)
    emitted = 0
    step = 0
    plain_time = plain_tokens = 0.0
    window = {"draft_time": 0.0, "draft_tokens": 0, "tokens": 0, "accepted": 0}
    quiet_windows = 0

    def verify(drafts: list[int]) -> list[tuple[int, mx.array]]:
        inputs = mx.array(history[-1:] + drafts, mx.uint32)
        logits = model(inputs[None], cache=layers)[0]
        maybe_quantize_kv_cache(layers, **kv)
        if logits_processors:
            rows = []
            for i in range(len(drafts) + 1):
                context = mx.array((history + drafts[:i])[-PROCESSOR_CONTEXT:], mx.uint32)
                row = logits[i : i + 1]
                for processor in logits_processors:
                    row = processor(context, row)
                rows.append(row)
            logits = mx.concatenate(rows, axis=0)
        logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
        sampled = sampler(logprobs)
        mx.eval(sampled, logprobs)
        samples = sampled.tolist()
        n = 0
        while n < len(drafts) and samples[n] == drafts[n]:
            n += 1
        if n < len(drafts):
            trim_prompt_cache(layers, len(drafts) - n)
        return [(samples[i], logprobs[i]) for i in range(n + 1)]

    try:
        with mx.stream(generation_stream):
            while emitted < max_tokens:
                if stats.fell_back:
                    break
                calibrating = step <= calibration_steps
                k = 0 if calibrating else min(length.k, max_tokens - emitted - 1)
                began = time.perf_counter()
                drafts = drafter.propose(history, k) if k > 0 else []
                out = verify(drafts)
                spent = time.perf_counter() - began
                accepted = len(out) - 1
                if drafts:
                    stats.drafted += len(drafts)
                    stats.accepted += accepted
                    length.update(len(drafts), accepted)
                    window["draft_time"] += spent
                    window["draft_tokens"] += len(out)
                    window["accepted"] += accepted
                elif step > 0:  # the first step ran the last prompt token: warm-up
                    plain_time += spent
                    plain_tokens += 1
                step += 1
                for token, logprobs in out:
                    if emitted == max_tokens:
                        break
                    history.append(token)
                    emitted += 1
                    window["tokens"] += 1
                    yield token, logprobs
                if window["tokens"] >= WINDOW_TOKENS and not calibrating:
                    plain = plain_time / plain_tokens if plain_tokens else None
                    drafted = (
                        window["draft_time"] / window["draft_tokens"] if window["draft_tokens"] else None
                    )
                    if drafted is not None:
                        stats.drafted_s_per_token = drafted
                    stats.plain_s_per_token = plain
                    quiet_windows = quiet_windows + 1 if window["accepted"] == 0 else 0
                    if (plain and drafted and drafted > plain) or quiet_windows >= 2:
                        stats.fell_back = True
                    window = {"draft_time": 0.0, "draft_tokens": 0, "tokens": 0, "accepted": 0}
            if stats.fell_back and emitted < max_tokens:
                # Drafting doesn't pay here: plain generate_step (pipelined) for the rest.
                for token, logprobs in generate_step(
                    mx.array(history[-1:], mx.uint32),
                    model,
                    max_tokens=max_tokens - emitted,
                    sampler=sampler,
                    logits_processors=processors_for(history[:-1]),
                    prompt_cache=layers,
                    kv_bits=kv_bits,
                    kv_group_size=kv_group_size,
                    quantized_kv_start=0,
                ):
                    history.append(token)
                    emitted += 1
                    yield token, logprobs
    finally:
        drafter.close()
        _settle(model, layers, len(history), history, kv)


def _settle(model: nn.Module, layers: LayerCaches, want: int, history: list[int], kv: dict) -> None:
    """Leave the cache holding exactly the tokens handed out, as generate_step does.

    A consumer that stops in the middle of a verified run leaves accepted tokens it never took
    (trimmed off); the target's own last sample is not fed yet (fed now, one small step).
    """
    held = layers[0].offset if layers else want
    if held > want:
        trim_prompt_cache(layers, held - want)
    elif held == want - 1:
        with mx.stream(generation_stream):
            model(mx.array(history[-1:], mx.uint32)[None], cache=layers)
            maybe_quantize_kv_cache(layers, **kv)
            mx.eval([c.state for c in layers])
