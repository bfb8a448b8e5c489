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

- ``MtpDrafter``: the model's own multi-token-prediction layer (Qwen3.5 family, Qwen3-Next;
  ``models/mtp.py``), one token per MTP step, recursively for more. It needs the target's
  hidden states, which the verify pass then returns beside the logits (``wants_hidden``).

Hybrid caches (Qwen3.5, Qwen3-Next): a Gated DeltaNet layer's state folds every token in and
can't be trimmed, but a snapshot of it is free (MLX arrays are immutable). So before each
verify pass the linear layers are snapshotted (``take_snapshot``); when drafts are rejected the
attention layers are trimmed back to before the pass, the linear layers restored, and the kept
inputs (the last token and the accepted drafts) fed again in one pass. When everything is
accepted nothing extra runs. ``prompt_cache.rewind`` does both kinds (a trimmable cache is
simply trimmed), so there is one verify loop for both.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Protocol, Sequence

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.generate import generate_step, generation_stream, maybe_quantize_kv_cache
from mlx_lm.models.cache import can_trim_prompt_cache, make_prompt_cache
from mlx_lm.sample_utils import LogitsProcessor, Sampler

from mlx_backend.generation.prompt_cache import (
    LayerCaches,
    Snapshots,
    common_prefix_length,
    is_restorable,
    rewind,
    take_snapshot,
)

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
    kind: str  # "draft-model", "prompt-lookup" or "mtp", shown in the stats

    def propose(self, tokens: Sequence[int], k: int) -> list[int]:
        """Up to ``k`` guesses for the tokens after ``tokens`` (every one of them final)."""

    def close(self) -> None:
        """The answer is over (book-keeping only)."""


# A drafter with ``wants_hidden = True`` also has ``observe(tokens, hidden)``: after every
# verify pass, the inputs the target kept and their hidden states (after the final norm).

Forward = Callable[[mx.array, LayerCaches], tuple[mx.array, Optional[mx.array]]]


def can_speculate(layers: LayerCaches) -> bool:
    """Verification takes rejected tokens back: the cache must be trimmable, or a hybrid one
    whose linear layers can be snapshotted and restored."""
    return can_trim_prompt_cache(layers) or is_restorable(layers)


def take_back(
    layers: LayerCaches, held: int, marks: Snapshots, position: int, feed: Callable[[list[int]], None],
    tokens: Sequence[int],
) -> bool:
    """Bring ``layers`` (holding ``held`` positions, ``tokens[:held]``) back to ``position``.

    A trimmable cache is trimmed; a hybrid one goes back to its latest mark at or before
    ``position`` (``marks``: position -> snapshot) and ``feed`` runs ``tokens`` from there on.
    False when there is no mark to go back to (the layers are then untouched).
    """
    at = rewind(layers, held, marks, position)
    if at is None:
        return False
    if at < position:
        feed(list(tokens[at:position]))
    return True


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
        marks: Optional[Snapshots] = None,
    ):
        self.model = model
        self.layers = layers
        self.held = list(held)  # the tokens ``layers`` hold, position by position
        self._kv = dict(quantized_kv_start=0, kv_group_size=kv_group_size, kv_bits=kv_bits)
        # A hybrid draft (a tiny Qwen3.5) can't be trimmed: its state at the last position
        # every later call shares (the tokens known final), to go back to past its guesses.
        self.restorable = is_restorable(layers)
        # (the store's snapshots of a reused cache count: their positions are final tokens).
        self.marks: Snapshots = dict(marks or {}) if self.restorable else {}
        self._first_mark: Optional[int] = min(self.marks) if self.marks else None
        self._mark()

    def catch_up(self, tokens: Sequence[int]) -> None:
        """Bring the cache to hold ``tokens[:-1]`` (the draft's own prefill, before decoding)."""
        todo = self._rewind_to(tokens)[:-1]
        with mx.stream(generation_stream):
            while todo:
                self._feed(todo[:DRAFT_PREFILL_CHUNK])
                mx.eval([c.state for c in self.layers])
                todo = todo[DRAFT_PREFILL_CHUNK:]
        self._mark()

    def propose(self, tokens: Sequence[int], k: int) -> list[int]:
        if len(tokens) - common_prefix_length(self.held, tokens) > DRAFT_PREFILL_CHUNK:
            self.catch_up(tokens)  # a long way behind: in chunks, like a prefill
        # Rejected guesses of the last call go; accepted tokens since are fed in one call.
        todo = self._rewind_to(tokens)
        with mx.stream(generation_stream):
            y = self._feed(todo)
            self._mark()  # every token fed so far is final
            drafts = [y]
            for _ in range(k - 1):
                y = self._feed_array(y)
                drafts.append(y)
            out = mx.concatenate(drafts).tolist()
        # The last guess is not fed: the next call feeds whatever the target kept instead.
        self.held.extend(out[:-1])
        return out

    def _rewind_to(self, tokens: Sequence[int]) -> list[int]:
        """Trim to the common prefix with ``tokens`` (leaving one to feed); what remains to feed.

        A hybrid draft goes back to its latest mark inside that prefix instead (or starts over).
        """
        keep = min(common_prefix_length(self.held, tokens), len(tokens) - 1)
        if keep < len(self.held):
            at = rewind(self.layers, len(self.held), self.marks, keep)
            if at is None:  # nothing to go back to: an empty cache
                self.layers[:] = make_prompt_cache(self.model)
                self.marks.clear()
                at = 0
            keep = at
        self.held = list(tokens[:keep])
        return list(tokens[keep:])

    def _mark(self) -> None:
        """Snapshot a hybrid draft here; the first mark (the reused prompt) and the last are kept."""
        if not self.restorable or not self.held:
            return
        position = len(self.held)
        if self._first_mark is None:
            self._first_mark = position
        self.marks = {p: s for p, s in self.marks.items() if p == self._first_mark}
        self.marks[position] = take_snapshot(self.layers)

    def settle(self) -> None:
        """Leave a hybrid draft holding only tokens known final (its unchecked guesses taken
        back), so its cache can be reused; a trimmable one is trimmed when next used."""
        if self.restorable and self.marks:
            position = max(self.marks)
            if position < len(self.held):
                at = rewind(self.layers, len(self.held), self.marks, position)
                if at is not None:
                    self.held = self.held[:at]

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


class MtpDrafter:
    """Guesses from the MTP layer: (hidden state at p, token p+1) -> token p+2, and on from its
    own output hidden state for deeper guesses.

    Its KV cache holds one entry per pair whose token is final; the guesses past the first are
    fed too (to reach the next), and taken off at the next call. The target's hidden states
    come in through ``extend`` (tokens the target ran, their hidden states): during prefill
    (``MtpPrefill``) and after each verify pass (the kept inputs). The last hidden state waits
    for the token after it, which the sampler picks: ``propose`` pairs it with ``tokens[-1]``.
    """

    kind = "mtp"
    wants_hidden = True

    def __init__(self, mtp: nn.Module):
        self.mtp = mtp
        self.cache = mtp.make_cache()
        self.final = 0  # cache entries whose pairs are final (the rest are guesses)
        self._rows: list[mx.array] = []  # hidden states [n, H] of pairs not fed yet ...
        self._tokens: list[int] = []  # ... and the tokens after them
        self._waiting: Optional[mx.array] = None  # the last hidden state [1, H], no token yet

    def extend(self, tokens: Sequence[int], hidden: mx.array) -> None:
        """The target ran ``tokens`` (consecutive positions) and produced ``hidden`` [n, H]."""
        if not len(tokens):
            return
        if self._waiting is not None:
            self._rows.append(self._waiting)
            self._tokens.append(tokens[0])
        if len(tokens) > 1:
            self._rows.append(hidden[:-1])
            self._tokens.extend(tokens[1:])
        self._waiting = hidden[-1:]

    observe = extend  # what the verify loop calls

    def flush(self) -> None:
        """Feed the pairs known so far into the cache (prefill: chunk by chunk, not all at the end)."""
        self._drop_guesses()
        if self._tokens:
            self._run(self._tokens, mx.concatenate(self._rows))
            self.final += len(self._tokens)
            self._rows, self._tokens = [], []
            mx.eval(self.cache[0].state)

    def propose(self, tokens: Sequence[int], k: int) -> list[int]:
        self._drop_guesses()
        if self._waiting is not None:  # its token is out now
            self._rows.append(self._waiting)
            self._tokens.append(tokens[-1])
            self._waiting = None
        if not self._tokens or k < 1:
            return []
        logits, out = self._run(self._tokens, mx.concatenate(self._rows))
        self.final += len(self._tokens)
        self._rows, self._tokens = [], []
        y = mx.argmax(logits[:, -1, :], axis=-1)
        drafts = [y]
        for _ in range(k - 1):
            logits, out = self.mtp(y[None], out[:, -1:, :], self.cache)
            y = mx.argmax(logits[:, -1, :], axis=-1)
            drafts.append(y)
        return mx.concatenate(drafts).tolist()

    def _run(self, tokens: list[int], hidden: mx.array) -> tuple[mx.array, mx.array]:
        return self.mtp(mx.array(tokens, mx.uint32)[None], hidden[None], self.cache)

    def _drop_guesses(self) -> None:
        extra = self.cache[0].offset - self.final
        if extra > 0:
            self.cache[0].trim(extra)

    def close(self) -> None:
        pass


class MtpPrefill:
    """Stands in for the target during prefill: the body's hidden states (no head: prefill never
    needs logits) also go to the MTP drafter, whose cache then covers the prompt."""

    def __init__(self, body: Callable[[mx.array, LayerCaches], mx.array], drafter: MtpDrafter):
        self.body = body
        self.drafter = drafter

    def __call__(self, inputs: mx.array, cache: LayerCaches) -> mx.array:
        hidden = self.body(inputs, cache)
        self.drafter.extend(inputs[0].tolist(), hidden[0])
        self.drafter.flush()
        return hidden


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
    forward: Optional[Forward] = None,
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
    ``forward(inputs, layers) -> (logits, hidden)`` runs the target (``inputs`` [1, n]); the
    default calls the model (no hidden states), a drafter that ``wants_hidden`` needs one that
    returns them (``mtp.forward_with_hidden``).
    Steps up to ``calibration_steps`` are plain (the first a warm-up), timed as the speed to beat.
    """
    history = list(tokens)
    kv = dict(quantized_kv_start=0, kv_group_size=kv_group_size, kv_bits=kv_bits)
    wants_hidden = getattr(drafter, "wants_hidden", False)
    if forward is None:
        if wants_hidden:
            raise ValueError(f"the {drafter.kind} drafter needs a forward that returns hidden states")
        forward = lambda inputs, cache: (model(inputs, cache=cache), None)  # noqa: E731
    start, most = {"prompt-lookup": (4, 10), "mtp": (2, 5)}.get(drafter.kind, (3, 8))
    length = DraftLength(num_draft, start=start, most=most)
    # The state before the latest verify pass (a hybrid cache's way back), by position.
    marks: Snapshots = {}

    def feed(inputs: list[int]) -> None:
        if inputs:
            model(mx.array(inputs, mx.uint32)[None], cache=layers)
            maybe_quantize_kv_cache(layers, **kv)
    emitted = 0
    step = 0
    plain_time = plain_tokens = 0.0
    window = {"draft_time": 0.0, "draft_tokens": 0, "tokens": 0, "accepted": 0}
    quiet_windows = 0

    def verify(drafts: list[int]) -> list[tuple[int, mx.array]]:
        before = len(history) - 1  # positions the cache holds
        marks.clear()
        marks[before] = take_snapshot(layers)
        inputs = history[-1:] + drafts
        logits, hidden = forward(mx.array(inputs, mx.uint32)[None], layers)
        logits = logits[0]
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
            # Keep the last token and the accepted drafts (trimmed, or restored and fed again).
            take_back(layers, before + len(inputs), marks, before + n + 1, feed, history[:-1] + inputs)
        if wants_hidden:
            drafter.observe(inputs[: n + 1], hidden[0, : n + 1])
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
        with mx.stream(generation_stream):
            _settle(layers, history, marks, feed)


def _settle(layers: LayerCaches, history: list[int], marks: Snapshots, feed: Callable[[list[int]], None]) -> None:
    """Leave the cache holding exactly the tokens handed out, as generate_step does.

    A consumer that stops in the middle of a verified run leaves accepted tokens it never took
    (taken back: trimmed, or a hybrid's state restored and the taken ones fed again); the
    target's own last sample is not fed yet (fed now, one small step).
    """
    want = len(history)
    held = layers[0].offset if layers else want
    if held > want:
        take_back(layers, held, marks, want, feed, history)
    elif held == want - 1:
        feed(history[-1:])
    else:
        return
    mx.eval([c.state for c in layers])
