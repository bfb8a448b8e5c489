"""Counting and cutting text by tokens the way the engine encodes it.

The engine encodes control tokens typed inside a message (``<|im_end|>``, ``<think>``) as plain
text, several tokens each, where ``tokenizer.encode`` would give one control id: text that may
hold one is counted through the same sanitized chat template, so the plan's counts are the
engine's.
"""

from __future__ import annotations

from typing import Iterator, Optional, Sequence, cast

from mlx_backend.documents.summary.protocols import SummaryTokenizer
from mlx_backend.events import ChatMessage, ChatRequest

# Token counting walks huge texts in pieces of this many characters (bounded memory).
_COUNT_CHUNK_CHARS = 256 * 1024
# Every control token starts with "<"; text without one encodes the same either way, so only
# text with one pays for the (unbatched) template round trip.
_CONTROL_TOKEN_START = "<"


def render_prompt(tokenizer: SummaryTokenizer, messages: Sequence[ChatMessage], *,
                  enable_thinking: Optional[bool], add_generation_prompt: bool = True) -> list[int]:
    """The prompt ids as the engine builds them (``Engine._render``)."""
    ids = tokenizer.apply_chat_template(list(messages), add_generation_prompt=add_generation_prompt,
                                        enable_thinking=enable_thinking, tokenize=True,
                                        sanitize_control_tokens=True)
    return cast(list[int], ids)  # tokenize=True: ids, never text


class TokenCounter:
    """Token counts of message text, control tokens in it counted as the text they stay."""

    def __init__(self, tokenizer: SummaryTokenizer) -> None:
        self._tokenizer = tokenizer
        self._empty_message: Optional[int] = None

    def count(self, text: str) -> int:
        return self.count_many([text])[0]

    def count_many(self, texts: Sequence[str]) -> list[int]:
        counts = [len(ids) for ids in self._tokenizer.encode_batch(list(texts))]
        return [self._as_message_text(text) if _CONTROL_TOKEN_START in text else count
                for text, count in zip(texts, counts)]

    def _as_message_text(self, text: str) -> int:
        if self._empty_message is None:
            self._empty_message = self._message_tokens("")
        return self._message_tokens(text) - self._empty_message

    def _message_tokens(self, text: str) -> int:
        return len(render_prompt(self._tokenizer, [ChatMessage("user", text)], enable_thinking=None,
                                 add_generation_prompt=False))


def _pieces(text: str, size: int) -> Iterator[str]:
    """``text`` in pieces of about ``size`` characters, cut after a newline where possible."""
    start = 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):
            newline = text.rfind("\n", start + size // 2, end)
            end = newline + 1 if newline != -1 else end
        yield text[start:end]
        start = end


def count_tokens(tokenizer: SummaryTokenizer, text: str) -> int:
    """Tokens in ``text``, counted piecewise so a huge document never holds all its ids at once."""
    counter = TokenCounter(tokenizer)
    total = 0
    batch: list[str] = []
    for piece in _pieces(text, _COUNT_CHUNK_CHARS):
        batch.append(piece)
        if len(batch) == 8:
            total += sum(counter.count_many(batch))
            batch = []
    if batch:
        total += sum(counter.count_many(batch))
    return total


class TokenTools:
    """Counting and cutting model-written text by tokens (a summary's text, re-encoded, can be
    longer than the tokens that produced it, so characters are no guide)."""

    def __init__(self, tokenizer: SummaryTokenizer) -> None:
        self._tokenizer = tokenizer
        self._counter = TokenCounter(tokenizer)

    def count(self, text: str) -> int:
        return self._counter.count(text)

    def cut(self, text: str, limit: int) -> str:
        ids = self._tokenizer.encode(text)
        return text if len(ids) <= limit else self._tokenizer.decode(ids[:max(1, limit)])

    def prompt(self, request: ChatRequest) -> int:
        return len(render_prompt(self._tokenizer, request.messages, enable_thinking=request.enable_thinking))
