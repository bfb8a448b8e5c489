"""Turn byte-level BPE token ids back into text one token at a time, as they are generated.

Qwen's tokens are byte sequences: a Chinese character or an emoji is often split across two or
three tokens, so decoding token by token would show broken characters. The streaming detokenizer
keeps an incremental UTF-8 decoder that holds back an incomplete character until its last byte
arrives, which makes each step O(token length) instead of re-decoding the whole output.
"""

from __future__ import annotations

import codecs
from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Optional


@lru_cache(maxsize=1)
def byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level alphabet: printable stand-in character -> the byte it encodes."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars = printable[:]
    shift = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + shift)
            shift += 1
    return {chr(char): byte for byte, char in zip(printable, chars)}


@lru_cache(maxsize=1)
def _to_latin1_table() -> dict[int, int]:
    # str.translate maps each stand-in char to the latin-1 char of its byte; one C-level pass per token.
    return {ord(char): byte for char, byte in byte_level_alphabet().items()}


def token_bytes(token: str) -> bytes:
    """The bytes one byte-level BPE vocabulary entry stands for."""
    translated = token.translate(_to_latin1_table())
    try:
        return translated.encode("latin-1")
    except UnicodeEncodeError:
        # A character outside the byte-level alphabet stands for itself (as tokenizers decodes it).
        return b"".join(ch.encode("latin-1") if ord(ch) < 256 else ch.encode("utf-8") for ch in translated)


class TokenTable:
    """id -> bytes for every token, plus which ids are special (control) tokens."""

    def __init__(self, vocab: Mapping[str, int], added_tokens: Mapping[int, str], special_ids: Iterable[int]) -> None:
        size = max([*vocab.values(), *added_tokens.keys(), -1]) + 1
        table: list[Optional[bytes]] = [None] * size
        for token, token_id in vocab.items():
            table[token_id] = token_bytes(token)
        # Added tokens decode to their literal content, not through the byte-level alphabet.
        for token_id, content in added_tokens.items():
            table[token_id] = content.encode("utf-8")
        self._bytes = table
        self.special_ids = frozenset(special_ids)

    def __len__(self) -> int:
        return len(self._bytes)

    def bytes_of(self, token_id: int, *, skip_special_tokens: bool) -> bytes:
        # Ids with no token (a model's padded embedding rows) decode to nothing, as in transformers.
        if skip_special_tokens and token_id in self.special_ids:
            return b""
        if 0 <= token_id < len(self._bytes):
            return self._bytes[token_id] or b""
        return b""


class StreamingDetokenizer:
    """Feed token ids one by one; get back only new, complete text.

    Special tokens (<|im_end|>, <|endoftext|>, ...) are dropped when ``skip_special_tokens`` is
    true (the default); <think>, </think> and <tool_call> are ordinary added tokens for Qwen3 and
    are always emitted. The concatenation of every ``add_token`` result and ``finalize()`` equals
    ``tokenizer.decode(ids, skip_special_tokens=...)``.
    """

    def __init__(self, table: TokenTable, *, skip_special_tokens: bool = True) -> None:
        self._table = table
        self._skip_special = skip_special_tokens
        # errors="replace" as Qwen's tokenizer_config asks: a truncated character shows as U+FFFD.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pieces: list[str] = []
        self.token_count = 0

    def add_token(self, token_id: int) -> str:
        self.token_count += 1
        data = self._table.bytes_of(int(token_id), skip_special_tokens=self._skip_special)
        if not data:
            return ""
        text = self._decoder.decode(data, final=False)
        if text:
            self._pieces.append(text)
        return text

    def add_tokens(self, ids: Iterable[int]) -> str:
        return "".join(self.add_token(token_id) for token_id in ids)

    def finalize(self) -> str:
        """Flush what is held back: an unfinished character becomes U+FFFD (never silently lost)."""
        text = self._decoder.decode(b"", final=True)
        if text:
            self._pieces.append(text)
        return text

    @property
    def pending_bytes(self) -> int:
        """Bytes of an incomplete character waiting for its next token."""
        return len(self._decoder.getstate()[0])

    @property
    def text(self) -> str:
        """All text emitted so far."""
        if len(self._pieces) > 1:
            self._pieces = ["".join(self._pieces)]
        return self._pieces[0] if self._pieces else ""
