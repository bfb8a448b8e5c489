"""Qwen3Tokenizer: loading, known ids, and encode/decode parity with transformers."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from mlx_backend.errors import ModelLoadError, RequestError
from mlx_backend.text.tokenizer import Qwen3Tokenizer
from tests.support.paths import QWEN3_TOKENIZER_DIR, SHARED_FIXTURES
from tests.support.tokenizers import (
    QWEN3_ADDED_TOKENS,
    QWEN3_FIXTURES_MISSING_REASON,
    qwen3_fixtures_available,
    tiny_token_id,
    write_qwen3_tokenizer,
    write_tiny_tokenizer,
)

needs_fixtures = pytest.mark.skipif(not qwen3_fixtures_available(), reason=QWEN3_FIXTURES_MISSING_REASON)

# Varied text: prose, code, Chinese, emoji (incl. ZWJ and flags), whitespace runs, numbers,
# contractions, control tokens written in the text, NFC-sensitive input.
TEXTS = [
    "Hello, world!",
    "The quick brown fox jumps over the lazy dog.",
    "I'm sure they've said it's what we'd do, and you'll see.",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "for (int i = 0; i < 10; ++i) {\n\tprintf(\"%d\\n\", i);\n}",
    "你好，世界！今天天气很好。人工智能正在改变世界。",
    "日本語のテキストと한국어 텍스트도 있습니다.",
    "Emoji: 😀🎉👍🏽 👨‍👩‍👧‍👦 🇫🇷 ❤️‍🔥",
    "Whitespace   runs\t\ttabs\n\n\nnewlines    \n  trailing   ",
    "   leading spaces and\r\nwindows line endings\r\n",
    "Numbers: 1234567890 3.14159 -42 1,000,000 2025-01-31 0x1F",
    "Café, naïve, résumé, Straße, Ελληνικά, русский текст, عربى",
    "e\u0301 (decomposed) vs \u00e9 (composed)",
    "<|im_start|>user\nhi<|im_end|>\n<think>\nplan\n</think>\n\n<tool_call>{}</tool_call>",
    "Mixed 中文 and English with 123 numbers and 😀 emoji.",
    "",
    " ",
    "\n",
]


@pytest.fixture(scope="module")
def qwen3() -> Qwen3Tokenizer:
    if not qwen3_fixtures_available():
        pytest.skip(QWEN3_FIXTURES_MISSING_REASON)
    return Qwen3Tokenizer.from_folder(QWEN3_TOKENIZER_DIR)


@pytest.fixture(scope="module")
def hf_qwen3():
    if not qwen3_fixtures_available():
        pytest.skip(QWEN3_FIXTURES_MISSING_REASON)
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(str(QWEN3_TOKENIZER_DIR))


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("tiny-tokenizer")
    write_tiny_tokenizer(folder)
    return folder


@pytest.fixture(scope="module")
def tiny(tiny_dir) -> Qwen3Tokenizer:
    return Qwen3Tokenizer.from_folder(tiny_dir)


# -- real Qwen3 tokenizer ---------------------------------------------------------------------


@needs_fixtures
def test_known_ids(qwen3):
    assert qwen3.encode("Hello, world!") == [9707, 11, 1879, 0]
    assert qwen3.token_to_id("<|endoftext|>") == 151643
    assert qwen3.token_to_id("<|im_start|>") == 151644
    assert qwen3.token_to_id("<|im_end|>") == 151645
    assert qwen3.token_to_id("<tool_call>") == 151657
    assert qwen3.think_start_id == 151667
    assert qwen3.think_end_id == 151668
    assert qwen3.vocab_size == 151669


@needs_fixtures
def test_control_tokens_in_text_become_single_ids(qwen3):
    assert qwen3.encode("<|im_start|>user\n") == [151644, 872, 198]
    assert qwen3.encode("<think>\n\n</think>\n\n") == [151667, 271, 151668, 271]


@needs_fixtures
def test_eos_ids_are_end_of_turn_and_end_of_text(qwen3):
    assert qwen3.eos_token_ids == frozenset({151645, 151643})


@needs_fixtures
def test_encode_matches_transformers(qwen3, hf_qwen3):
    for text in TEXTS:
        assert qwen3.encode(text) == hf_qwen3.encode(text, add_special_tokens=False), text


@needs_fixtures
def test_encode_batch_matches_encode(qwen3):
    assert qwen3.encode_batch(TEXTS) == [qwen3.encode(text) for text in TEXTS]


@needs_fixtures
def test_decode_matches_transformers(qwen3, hf_qwen3):
    for text in TEXTS:
        ids = hf_qwen3.encode(text, add_special_tokens=False)
        for skip in (False, True):
            assert qwen3.decode(ids, skip_special_tokens=skip) == hf_qwen3.decode(ids, skip_special_tokens=skip), text


@needs_fixtures
def test_decode_round_trips_nfc_text(qwen3):
    for text in TEXTS:
        # The NFC normalizer composes "e + combining acute" into "é"; everything else is byte-exact.
        import unicodedata

        assert qwen3.decode(qwen3.encode(text)) == unicodedata.normalize("NFC", text)


@needs_fixtures
def test_tokenizer_json_loads_to_the_same_tokenizer(tmp_path, qwen3):
    write_qwen3_tokenizer(tmp_path, "hybrid", with_tokenizer_json=True)
    # vocab.json/merges.txt must not be needed when tokenizer.json is there.
    (tmp_path / "vocab.json").unlink()
    (tmp_path / "merges.txt").unlink()
    from_json = Qwen3Tokenizer.from_folder(tmp_path)
    for text in TEXTS:
        assert from_json.encode(text) == qwen3.encode(text), text
    assert from_json.eos_token_ids == qwen3.eos_token_ids
    assert (from_json.think_start_id, from_json.think_end_id) == (151667, 151668)


@needs_fixtures
def test_generation_config_stop_ids_are_added(tmp_path):
    write_qwen3_tokenizer(tmp_path, "hybrid")
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [151645, 151643, 151662]}))
    assert Qwen3Tokenizer.from_folder(tmp_path).eos_token_ids == frozenset({151645, 151643, 151662})


@needs_fixtures
def test_thinking_modes_of_the_three_variants(tmp_path):
    expected = {"hybrid": ("hybrid", False), "instruct-2507": ("never", False), "thinking-2507": ("always", True)}
    for variant, (mode, opens_think) in expected.items():
        folder = tmp_path / variant
        write_qwen3_tokenizer(folder, variant)
        tokenizer = Qwen3Tokenizer.from_folder(folder)
        assert (tokenizer.thinking_mode, tokenizer.template_opens_think) == (mode, opens_think), variant


# -- the 248K vocabulary of Qwen3.5 / 3.6 / 3.8 -------------------------------------------------

QWEN35_FAMILY_DIR = SHARED_FIXTURES / "qwen3.5-family"
# Words whose combining marks (\p{M}) Qwen2's split pattern would cut off.
COMBINING_MARK_TEXTS = ["नमस्ते दुनिया", "สวัสดีครับ", "ñ and n\u0303 , मैं", "Z\u0324\u0354\u0367\u0311algo"]


@pytest.fixture(scope="module")
def qwen38_dir(tmp_path_factory) -> Path:
    """Qwen3.8-27B's tokenizer_config.json and generation_config.json beside the 248K vocabulary."""
    vocab_dir, model_dir = QWEN35_FAMILY_DIR / "tokenizer-248k", QWEN35_FAMILY_DIR / "Qwen3.8-27B"
    if not (vocab_dir / "vocab.json").is_file() or not (model_dir / "tokenizer_config.json").is_file():
        pytest.skip(f"the Qwen3.5-family fixtures are missing under {QWEN35_FAMILY_DIR}")
    folder = tmp_path_factory.mktemp("qwen3.8")
    for source in (vocab_dir / "vocab.json", vocab_dir / "merges.txt"):
        (folder / source.name).symlink_to(source)
    for name in ("tokenizer_config.json", "generation_config.json"):
        shutil.copyfile(model_dir / name, folder / name)
    return folder


def test_qwen38_known_ids(qwen38_dir):
    tokenizer = Qwen3Tokenizer.from_folder(qwen38_dir)
    assert [tokenizer.token_to_id(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")] == [248044, 248045, 248046]
    assert (tokenizer.think_start_id, tokenizer.think_end_id) == (248068, 248069)
    assert tokenizer.vocab_size == 248077
    assert tokenizer.eos_token_ids == frozenset({248046, 248044})
    assert tokenizer.thinking_mode == "hybrid"


def test_qwen38_pretokenize_regex_is_honoured(qwen38_dir):
    # transformers' Qwen2Tokenizer ignores tokenizer_config["pretokenize_regex"]; its Qwen3_5Tokenizer
    # has the \p{M} pattern built in (but AutoTokenizer's copy of it reads no vocab.json), so it is the reference.
    from transformers import Qwen2Tokenizer
    from transformers.models.qwen3_5.tokenization_qwen3_5 import Qwen3_5Tokenizer

    tokenizer = Qwen3Tokenizer.from_folder(qwen38_dir)
    reference = Qwen3_5Tokenizer(vocab=str(qwen38_dir / "vocab.json"), merges=str(qwen38_dir / "merges.txt"))
    qwen2_split = Qwen2Tokenizer.from_pretrained(str(qwen38_dir))
    for text in [*COMBINING_MARK_TEXTS, *TEXTS[:8]]:
        assert tokenizer.encode(text) == reference.encode(text, add_special_tokens=False), text
    assert any(tokenizer.encode(t) != qwen2_split.encode(t, add_special_tokens=False) for t in COMBINING_MARK_TEXTS)


# -- tiny tokenizer (always runs) -------------------------------------------------------------


def test_tiny_tokenizer_has_qwen3_control_tokens(tiny, tiny_dir):
    vocab_size = write_tiny_tokenizer(tiny_dir)
    assert tiny.vocab_size == vocab_size
    for content, _special in QWEN3_ADDED_TOKENS:
        assert tiny.token_to_id(content) == tiny_token_id(content)
        assert tiny.encode(content) == [tiny_token_id(content)]
    assert tiny.think_start_id == tiny_token_id("<think>")
    assert tiny.think_end_id == tiny_token_id("</think>")
    assert tiny.eos_token_ids == frozenset({tiny_token_id("<|im_end|>"), tiny_token_id("<|endoftext|>")})
    assert tiny.thinking_mode == "hybrid"
    assert tiny.template_opens_think is False


def test_tiny_tokenizer_round_trips_all_texts(tiny):
    import unicodedata

    for text in TEXTS:
        ids = tiny.encode(text)
        assert all(0 <= i < tiny.vocab_size for i in ids)
        assert tiny.decode(ids) == unicodedata.normalize("NFC", text), text


def test_tiny_tokenizer_merges_common_words(tiny):
    # A trained BPE, not a byte-per-token table: frequent corpus words take fewer tokens than bytes.
    assert len(tiny.encode("the")) < len(b"the")
    assert len(tiny.encode(" Hello, world!")) < len(" Hello, world!".encode())


def test_tiny_tokenizer_matches_transformers(tiny, tiny_dir):
    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoTokenizer.from_pretrained(str(tiny_dir))
    for text in TEXTS:
        ids = hf.encode(text, add_special_tokens=False)
        assert tiny.encode(text) == ids, text
        assert tiny.decode(ids) == hf.decode(ids), text


def test_tiny_tokenizer_json_and_vocab_files_agree(tmp_path, tiny):
    write_tiny_tokenizer(tmp_path, with_tokenizer_json=True)
    (tmp_path / "vocab.json").unlink()
    (tmp_path / "merges.txt").unlink()
    from_json = Qwen3Tokenizer.from_folder(tmp_path)
    for text in TEXTS:
        assert from_json.encode(text) == tiny.encode(text), text


def test_writing_the_tiny_tokenizer_is_deterministic(tmp_path, tiny_dir):
    write_tiny_tokenizer(tmp_path)
    for name in ("vocab.json", "merges.txt", "tokenizer_config.json"):
        assert (tmp_path / name).read_bytes() == (tiny_dir / name).read_bytes(), name


# -- errors -----------------------------------------------------------------------------------


def test_missing_folder_is_a_model_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        Qwen3Tokenizer.from_folder(tmp_path / "nope")


def test_missing_tokenizer_files(tmp_path, tiny_dir):
    shutil.copy(tiny_dir / "tokenizer_config.json", tmp_path)
    with pytest.raises(ModelLoadError, match="No tokenizer found"):
        Qwen3Tokenizer.from_folder(tmp_path)


def test_missing_tokenizer_config(tmp_path, tiny_dir):
    shutil.copy(tiny_dir / "vocab.json", tmp_path)
    shutil.copy(tiny_dir / "merges.txt", tmp_path)
    with pytest.raises(ModelLoadError, match="tokenizer_config.json is missing"):
        Qwen3Tokenizer.from_folder(tmp_path)


def test_corrupt_vocab_is_a_model_load_error(tmp_path):
    write_tiny_tokenizer(tmp_path)
    (tmp_path / "vocab.json").write_text("{not json")
    with pytest.raises(ModelLoadError, match="vocab.json"):
        Qwen3Tokenizer.from_folder(tmp_path)


def test_malformed_merges_is_a_model_load_error(tmp_path):
    write_tiny_tokenizer(tmp_path)
    (tmp_path / "merges.txt").write_text("#version: 0.2\nĠ t extra\n")
    with pytest.raises(ModelLoadError, match="merges.txt.*Merges text file invalid"):
        Qwen3Tokenizer.from_folder(tmp_path)


def test_corrupt_tokenizer_json_is_a_model_load_error(tmp_path):
    write_tiny_tokenizer(tmp_path, with_tokenizer_json=True)
    (tmp_path / "tokenizer.json").write_text('{"model": 1}')
    with pytest.raises(ModelLoadError, match="tokenizer.json"):
        Qwen3Tokenizer.from_folder(tmp_path)


def test_model_without_chat_template_is_refused(tmp_path):
    write_tiny_tokenizer(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    del config["chat_template"]
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="no chat template"):
        Qwen3Tokenizer.from_folder(tmp_path)


def test_added_token_id_mismatch_with_tokenizer_json_is_refused(tmp_path):
    write_tiny_tokenizer(tmp_path, with_tokenizer_json=True)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    decoder = config["added_tokens_decoder"]
    think_id = str(tiny_token_id("<think>"))
    decoder[str(int(think_id) + 1000)] = decoder.pop(think_id)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="think>' is declared as id .* but the vocabulary gives it id"):
        Qwen3Tokenizer.from_folder(tmp_path)


def test_added_token_declared_past_a_gap_is_refused(tmp_path):
    # vocab.json + merges.txt: transformers numbers added tokens right after the vocabulary and
    # would silently give </think> another id than the one the model was trained on.
    write_tiny_tokenizer(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    decoder = config["added_tokens_decoder"]
    think_end = str(tiny_token_id("</think>"))
    decoder["5000"] = decoder.pop(think_end)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="'</think>' is declared as id 5000"):
        Qwen3Tokenizer.from_folder(tmp_path)


def test_chat_template_jinja_file_takes_precedence(tmp_path):
    write_tiny_tokenizer(tmp_path)
    (tmp_path / "chat_template.jinja").write_text(
        "{% for m in messages %}[{{ m.role }}]{{ m.content }}{% endfor %}{% if add_generation_prompt %}[assistant]{% endif %}"
    )
    tokenizer = Qwen3Tokenizer.from_folder(tmp_path)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False)
    assert text == "[user]hi[assistant]"
    assert tokenizer.thinking_mode == "never"


def test_encode_rejects_non_text(tiny):
    with pytest.raises(RequestError, match="Only text"):
        tiny.encode(b"bytes")  # type: ignore[arg-type]
