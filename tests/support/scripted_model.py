"""A real random-weight model whose replies are scripted, for tests of what parses a reply.

``ScriptedModel(model, tokenizer, replies)`` runs the real network (so caches, prefill and
decoding are the engine's own) but overrides the logits of each decoding step: after a prompt
it emits the tokens of the next scripted reply (what follows the prompt, so a think block the
template opens is not part of it), then ``<|im_end|>``. Each distinct prompt gets the next
reply in order; a retry of the same prompt gets the same reply; past the script, replies are
empty.

The tokens so far are tracked from the cache's offset before each call, so prompt-cache reuse,
trims and re-encoding see the same history the engine does. A speculative verify call (the last
token and several drafted ones at once, e.g. from prompt lookup) gets the script's next token at
every position that still follows the script.
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
        targets = self._targets(before, fed)
        if not targets:
            return logits
        vocab = logits.shape[-1]
        ids = mx.arange(vocab)
        rows = [
            mx.broadcast_to(mx.where(ids == targets[j], 0.0, -1e9).astype(logits.dtype), (logits.shape[0], vocab))
            if j in targets else logits[:, j, :]
            for j in range(logits.shape[1])
        ]
        return mx.stack(rows, axis=1)

    def _targets(self, before: int, fed: list[int]) -> dict[int, int]:
        """The forced next token at each position of this call (position in ``fed`` -> token)."""
        if self._continues(before):
            # Decoding the reply, one token at a time or a speculative verify of several drafts:
            # each position that still follows the script gets the script's next token.
            start, reply = self._writing
            targets = {}
            for j in range(len(fed)):
                written = before + j + 1 - start
                if self._history[start : before + j + 1] != reply[:written]:
                    break  # a draft that left the script: what follows is rejected anyway
                targets[j] = reply[written] if written < len(reply) else self._end
            return targets
        if len(fed) > 1:
            self._writing = None  # a prefill or a re-encode: whatever was being written ended
            return {}
        token = self._next_token(fed)
        return {} if token is None else {0: token}

    def _continues(self, before: int) -> bool:
        """Does this call start inside the reply being written (its first token the next one)?"""
        if self._writing is None:
            return False
        start, reply = self._writing
        written = before + 1 - start
        return 0 < written <= len(reply) and self._history[start : before + 1] == reply[:written]

    def _next_token(self, fed: list[int]) -> int | None:
        if fed[0] == self._end:
            return self._end  # generate_step runs one step past the end of a turn: not a new prompt
        if len(self._history) >= 2 and self._history[-2] == self._end:
            # A lone token right after an end of turn is the engine re-encoding a plain reply
            # (the "\n" the template puts after <|im_end|>); a generation prompt never ends so.
            return None
        # generate_step feeds the prompt's last token alone: a single-token call that doesn't
        # continue the reply being written starts a new one.
        key = tuple(self._history)
        if key not in self._reply_for:
            if len(self._reply_for) >= len(self._replies):
                return self._end  # out of script: end the turn at once
            self._reply_for[key] = len(self._reply_for)
            self.prompts.append(list(key))
        reply = self._replies[self._reply_for[key]]
        self._writing = (len(self._history), reply)
        return reply[0] if reply else self._end
