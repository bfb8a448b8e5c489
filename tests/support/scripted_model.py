"""A real random-weight model whose replies are scripted, for tests of what parses a reply.

``ScriptedModel(model, tokenizer, replies)`` runs the real network (so caches, prefill and
decoding are the engine's own) but overrides the logits of each decoding step: after a prompt
it emits the tokens of the next scripted reply (what follows the prompt, so a think block the
template opens is not part of it), then ``<|im_end|>``. Each distinct prompt gets the next
reply in order; a retry of the same prompt gets the same reply; past the script, replies are
empty.

The tokens so far are tracked from the cache's offset before each call, so prompt-cache reuse,
trims and re-encoding see the same history the engine does.
"""

from __future__ import annotations

from typing import Any, Sequence

import mlx.core as mx


class ScriptedModel:
    def __init__(self, model: Any, tokenizer: Any, replies: Sequence[str]) -> None:
        self._model = model
        self._end = tokenizer.token_to_id("<|im_end|>")
        hf = tokenizer._hf  # the raw tokenizer: scripted replies may hold special tokens
        self._replies = [hf.encode(reply, add_special_tokens=False) for reply in replies]
        self._history: list[int] = []
        self._reply_for: dict[tuple[int, ...], int] = {}
        self._writing: tuple[int, list[int]] | None = None  # (where the reply starts, its tokens)
        self.prompts: list[list[int]] = []  # the prompt before each scripted reply, in order

    def __getattr__(self, name: str) -> Any:
        return getattr(self._model, name)

    def __call__(self, inputs: mx.array, cache: Any = None, **kwargs: Any) -> mx.array:
        before = cache[0].offset if cache else 0
        fed = inputs.reshape(-1).tolist()
        self._history = self._history[:before] + fed
        logits = self._model(inputs, cache=cache, **kwargs)
        target = self._next_token(fed) if len(fed) == 1 else None
        if len(fed) > 1:
            self._writing = None  # a prefill or a re-encode: whatever was being written ended
        if target is None:
            return logits
        vocab = logits.shape[-1]
        forced = mx.where(mx.arange(vocab) == target, 0.0, -1e9).astype(logits.dtype)
        return mx.concatenate([logits[:, :-1, :], mx.broadcast_to(forced, (logits.shape[0], 1, vocab))], axis=1)

    def _next_token(self, fed: list[int]) -> int | None:
        if fed[0] == self._end:
            return self._end  # generate_step runs one step past the end of a turn: not a new prompt
        if len(self._history) >= 2 and self._history[-2] == self._end:
            # A lone token right after an end of turn is the engine re-encoding a plain reply
            # (the "\n" the template puts after <|im_end|>); a generation prompt never ends so.
            return None
        # generate_step feeds the prompt's last token alone, then each sampled token alone: a
        # single-token call that doesn't continue the reply being written starts a new one.
        if self._writing is not None:
            start, reply = self._writing
            written = len(self._history) - start
            if 0 < written <= len(reply) and self._history[start:] == reply[:written]:
                return reply[written] if written < len(reply) else self._end
        key = tuple(self._history)
        if key not in self._reply_for:
            if len(self._reply_for) >= len(self._replies):
                return self._end  # out of script: end the turn at once
            self._reply_for[key] = len(self._reply_for)
            self.prompts.append(list(key))
        reply = self._replies[self._reply_for[key]]
        self._writing = (len(self._history), reply)
        return reply[0] if reply else self._end
