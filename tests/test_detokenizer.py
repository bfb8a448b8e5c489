"""Streaming detokenizer: complete UTF-8 only, special tokens by choice, same text as decode()."""

from __future__ import annotations

import random
import unicodedata

import pytest

from mlx_backend.text.detokenizer import byte_level_alphabet, token_bytes
from mlx_backend.text.tokenizer import Qwen3Tokenizer
from tests.support.paths import QWEN3_TOKENIZER_DIR
from tests.support.tokenizers import (
    QWEN3_FIXTURES_MISSING_REASON,
    qwen3_fixtures_available,
    tiny_token_id,
    write_tiny_tokenizer,
)

MULTIBYTE_TEXTS = [
    "你好，世界！今天天气很好。",
    "Emoji 😀🎉👍🏽 family 👨‍👩‍👧‍👦 flag 🇯🇵 fire ❤️‍🔥",
    "Ελληνικά, русский, عربى, हिन्दी, 한국어, ไทย",
    "Mixed 中文 text with code `print('你好')` and 😀.",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢 math 𝛼𝛽𝛾 and rare CJK 𠀀𠀁",
]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Qwen3Tokenizer:
    folder = tmp_path_factory.mktemp("tiny")
    write_tiny_tokenizer(folder)
    return Qwen3Tokenizer.from_folder(folder)


@pytest.fixture(scope="module")
def qwen3() -> Qwen3Tokenizer:
    if not qwen3_fixtures_available():
        pytest.skip(QWEN3_FIXTURES_MISSING_REASON)
    return Qwen3Tokenizer.from_folder(QWEN3_TOKENIZER_DIR)


def _stream(tokenizer: Qwen3Tokenizer, ids, **options) -> list[str]:
    detokenizer = tokenizer.detokenizer(**options)
    pieces = [detokenizer.add_token(token_id) for token_id in ids]
    pieces.append(detokenizer.finalize())
    return pieces


def _tokenizers(request) -> list[Qwen3Tokenizer]:
    found = [request.getfixturevalue("tiny")]
    if qwen3_fixtures_available():
        found.append(request.getfixturevalue("qwen3"))
    return found


def test_alphabet_is_gpt2_byte_level():
    from tokenizers import pre_tokenizers

    alphabet = byte_level_alphabet()
    assert sorted(alphabet) == sorted(pre_tokenizers.ByteLevel.alphabet())
    assert sorted(alphabet.values()) == list(range(256))
    assert token_bytes("Ġhello") == b" hello"
    assert token_bytes("Ċ") == b"\n"


@pytest.mark.parametrize("text", MULTIBYTE_TEXTS)
def test_streamed_pieces_are_whole_characters(text, request):
    for tokenizer in _tokenizers(request):
        ids = tokenizer.encode(text)
        pieces = _stream(tokenizer, ids)
        assert "".join(pieces) == unicodedata.normalize("NFC", text)
        assert all("\ufffd" not in piece for piece in pieces)


def test_characters_split_across_tokens_are_held_back(tiny):
    # The tiny vocabulary has few merges, so a Chinese character or an emoji spans several tokens.
    ids = tiny.encode("😀")
    assert len(ids) > 1
    detokenizer = tiny.detokenizer()
    outputs = [detokenizer.add_token(i) for i in ids]
    assert outputs[:-1] == [""] * (len(ids) - 1)
    assert outputs[-1] == "😀"
    assert detokenizer.pending_bytes == 0
    assert detokenizer.finalize() == ""


def test_real_qwen3_splits_rare_characters(qwen3):
    # Even the real vocabulary splits rare characters: the pieces must still be whole.
    text = "𠀀𝔘🫠"
    ids = qwen3.encode(text)
    assert len(ids) > 3
    pieces = _stream(qwen3, ids)
    assert "".join(pieces) == text
    assert "" in pieces


def test_truncated_character_is_flushed_as_replacement(tiny):
    first_byte_ids = tiny.encode("😀")[:-1]
    detokenizer = tiny.detokenizer()
    assert detokenizer.add_tokens(tiny.encode("ok ") + first_byte_ids) == "ok "
    assert detokenizer.pending_bytes > 0
    assert detokenizer.finalize() == "\ufffd"
    assert detokenizer.text == "ok \ufffd"


def test_special_tokens_are_skipped_unless_asked(tiny):
    ids = tiny.encode("<|im_start|>assistant\n<think>\nhm\n</think>\n\nHi<|im_end|><|endoftext|>")
    skipped = "".join(_stream(tiny, ids))
    assert skipped == "assistant\n<think>\nhm\n</think>\n\nHi"
    kept = "".join(_stream(tiny, ids, skip_special_tokens=False))
    assert kept == "<|im_start|>assistant\n<think>\nhm\n</think>\n\nHi<|im_end|><|endoftext|>"


def test_think_and_tool_tokens_arrive_as_whole_tags(tiny):
    detokenizer = tiny.detokenizer()
    assert detokenizer.add_token(tiny_token_id("<think>")) == "<think>"
    assert detokenizer.add_token(tiny_token_id("</think>")) == "</think>"
    assert detokenizer.add_token(tiny_token_id("<tool_call>")) == "<tool_call>"


def test_ids_without_a_token_decode_to_nothing(tiny):
    # A model's embedding is padded beyond the tokenizer (151936 vs 151669 for Qwen3).
    detokenizer = tiny.detokenizer()
    assert detokenizer.add_token(tiny.vocab_size + 10) == ""
    assert detokenizer.add_token(tiny.encode("a")[0]) == "a"
    assert tiny.decode([tiny.vocab_size + 10, *tiny.encode("b")]) == "b"


def test_stream_equals_decode_for_random_id_sequences(request):
    # Random ids produce invalid UTF-8 too: streaming must still agree with one-shot decoding.
    rng = random.Random(0)
    for tokenizer in _tokenizers(request):
        for _ in range(50):
            ids = [rng.randrange(tokenizer.vocab_size) for _ in range(rng.randrange(1, 40))]
            for skip in (True, False):
                streamed = "".join(_stream(tokenizer, ids, skip_special_tokens=skip))
                assert streamed == tokenizer.decode(ids, skip_special_tokens=skip)


def test_stream_matches_transformers_decode(qwen3):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(QWEN3_TOKENIZER_DIR))
    for text in MULTIBYTE_TEXTS:
        ids = qwen3.encode(text) + [151645]
        assert "".join(_stream(qwen3, ids)) == hf.decode(ids, skip_special_tokens=True)
    rng = random.Random(1)
    for _ in range(30):
        ids = [rng.randrange(151669) for _ in range(20)]
        assert "".join(_stream(qwen3, ids, skip_special_tokens=False)) == hf.decode(ids)


def test_long_stream_keeps_only_incomplete_bytes_pending(tiny):
    text = "你好😀 world " * 500
    ids = tiny.encode(text)
    detokenizer = tiny.detokenizer()
    max_pending = 0
    for token_id in ids:
        detokenizer.add_token(token_id)
        max_pending = max(max_pending, detokenizer.pending_bytes)
    detokenizer.finalize()
    # Never more than one unfinished UTF-8 character (at most 3 of its 4 bytes) is held back.
    assert 0 < max_pending <= 3
    assert detokenizer.text == text
    assert detokenizer.token_count == len(ids)
