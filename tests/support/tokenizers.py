"""Tokenizer folders for tests: a tiny self-built one and the real Qwen3 ones.

``write_tiny_tokenizer`` trains a small ByteLevel BPE (Qwen2 split regex, NFC) on a built-in
corpus and gives it Qwen3's special tokens and official hybrid chat template, so every test can
build a whole model folder in milliseconds without the shared fixtures. ``write_qwen3_tokenizer``
copies the real Qwen3 tokenizer files (tests/support/paths.py) with the chat template of one of
the three Qwen3 flavours.

Both write the Hugging Face layout (vocab.json, merges.txt, tokenizer_config.json and, on request,
tokenizer.json) and return the number of token ids a model's embedding must cover.
"""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path
from typing import Literal

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from tests.support.paths import QWEN3_2507_INSTRUCT_DIR, QWEN3_TOKENIZER_DIR

Variant = Literal["hybrid", "instruct-2507", "thinking-2507"]
VARIANTS: tuple[str, ...] = ("hybrid", "instruct-2507", "thinking-2507")

# Qwen2/Qwen3's pre-tokenizer split pattern (from their tokenizer.json).
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Qwen3's added tokens in id order (151643 ...): (content, special). The tiny tokenizer gives them
# the ids right after its own vocabulary, in this same order.
QWEN3_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
    ("<tool_response>", False),
    ("</tool_response>", False),
    ("<think>", False),
    ("</think>", False),
)

TINY_BPE_VOCAB_SIZE = 512  # 256 byte symbols + merges; the added tokens come on top.

# Small but varied: English prose, code, numbers, Chinese, emoji, whitespace runs and chat-like
# text, so merges exist for common words and multi-byte characters still split across tokens.
_TINY_CORPUS: tuple[str, ...] = (
    "Hello, world! Hello there, how are you today?",
    "The quick brown fox jumps over the lazy dog. The dog sleeps in the sun.",
    "I think the answer is 42. Let me think about it again: 6 * 7 = 42.",
    "Please summarize the following document in three short paragraphs.",
    "Qwen is a large language model. It can answer questions, write code and reason.",
    "def main():\n    print('hello world')\n    return 0\n\nif __name__ == '__main__':\n    main()\n",
    "for i in range(10):\n\tif i % 2 == 0:\n\t\tcontinue\n\ttotal += i\n",
    "{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}",
    "The temperature today is 21.5 degrees, tomorrow 19 and on Friday 23.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000 2025 3.14159 -17 +3",
    "你好，世界！今天天气很好。我们一起去公园散步吧。",
    "人工智能正在改变世界。请用中文回答这个问题。",
    "Emoji test: 😀 😃 🎉 👍 🚀 ❤️ and flags 🇫🇷 🇯🇵.",
    "Ünïcödé, café, naïve, résumé, Straße, Ελληνικά, русский текст.",
    "Whitespace    runs,\ttabs\t\tand\n\n\nnewlines   at   the   end   ",
    "user: what is the capital of France?\nassistant: The capital of France is Paris.",
    "Let me reason step by step. First, we note that the sum is even. Therefore the answer is yes.",
    "Markdown: # Title\n\n- item one\n- item two\n\n**bold** and _italic_ and `code`.",
)


def _tiny_corpus_lines() -> list[str]:
    # Repeat so the trainer sees frequent pairs often enough to build useful merges.
    return list(_TINY_CORPUS) * 4


def _added_tokens_decoder(first_id: int) -> dict[str, dict]:
    return {
        str(first_id + offset): {
            "content": content,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": special,
        }
        for offset, (content, special) in enumerate(QWEN3_ADDED_TOKENS)
    }


def _tokenizer_config(chat_template: str, first_added_id: int, model_max_length: int) -> dict:
    # Mirrors Qwen3's published tokenizer_config.json field for field.
    return {
        "add_bos_token": False,
        "add_prefix_space": False,
        "added_tokens_decoder": _added_tokens_decoder(first_added_id),
        "additional_special_tokens": [c for c, special in QWEN3_ADDED_TOKENS[1:14] if special],
        "bos_token": None,
        "chat_template": chat_template,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "errors": "replace",
        "model_max_length": model_max_length,
        "pad_token": "<|endoftext|>",
        "split_special_tokens": False,
        "tokenizer_class": "Qwen2Tokenizer",
        "unk_token": None,
    }


def _byte_level_bpe(vocab: dict[str, int] | None = None, merges: list[tuple[str, str]] | None = None) -> Tokenizer:
    # The same pipeline as Qwen2/Qwen3's tokenizer.json, built here rather than imported from
    # mlx_backend so the files under test are not produced by the code under test.
    model = models.BPE(vocab, merges) if vocab is not None else models.BPE()
    tokenizer = Tokenizer(model)
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel(add_prefix_space=False, use_regex=False)
    return tokenizer


def _with_added_tokens(tokenizer: Tokenizer) -> Tokenizer:
    tokenizer.add_special_tokens(
        [AddedToken(content, special=special, normalized=False) for content, special in QWEN3_ADDED_TOKENS]
    )
    return tokenizer


@functools.lru_cache(maxsize=1)
def _trained_tiny() -> tuple[str, str, str]:
    """Train once per process; returns (vocab.json text, merges.txt text, tokenizer.json text)."""
    tokenizer = _byte_level_bpe()
    trainer = trainers.BpeTrainer(
        vocab_size=TINY_BPE_VOCAB_SIZE,
        min_frequency=2,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        special_tokens=[],
    )
    tokenizer.train_from_iterator(_tiny_corpus_lines(), trainer=trainer)
    model_state = json.loads(tokenizer.to_str())["model"]
    vocab: dict[str, int] = model_state["vocab"]
    merges = [tuple(m) if isinstance(m, list) else tuple(m.split(" ", 1)) for m in model_state["merges"]]
    vocab_text = json.dumps(vocab, ensure_ascii=False)
    merges_text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    full = _with_added_tokens(_byte_level_bpe(vocab, merges))
    return vocab_text, merges_text, full.to_str()


def write_tiny_tokenizer(
    dst: str | Path, *, with_tokenizer_json: bool = False, chat_template: str | None = None
) -> int:
    """Write the tiny tokenizer into ``dst``; return the vocab size a model needs (last id + 1).

    The chat template is Qwen3's official hybrid one (from the fixtures when present, else the
    embedded copy) unless ``chat_template`` is given.
    """
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    vocab_text, merges_text, tokenizer_json = _trained_tiny()
    first_added_id = len(json.loads(vocab_text))
    template = chat_template if chat_template is not None else hybrid_chat_template()
    (dst / "vocab.json").write_text(vocab_text, encoding="utf-8")
    (dst / "merges.txt").write_text(merges_text, encoding="utf-8")
    config = _tokenizer_config(template, first_added_id, model_max_length=40960)
    (dst / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    if with_tokenizer_json:
        (dst / "tokenizer.json").write_text(tokenizer_json, encoding="utf-8")
    return first_added_id + len(QWEN3_ADDED_TOKENS)


def tiny_token_id(content: str) -> int:
    """The tiny tokenizer's id for one of Qwen3's added tokens, e.g. ``"<think>"``."""
    first_added_id = len(json.loads(_trained_tiny()[0]))
    contents = [c for c, _ in QWEN3_ADDED_TOKENS]
    return first_added_id + contents.index(content)


def qwen3_fixtures_available() -> bool:
    return all((QWEN3_TOKENIZER_DIR / name).is_file() for name in ("vocab.json", "merges.txt", "tokenizer_config.json"))


def qwen3_2507_fixture_available() -> bool:
    return (QWEN3_2507_INSTRUCT_DIR / "tokenizer_config.json").is_file()


QWEN3_FIXTURES_MISSING_REASON = f"shared Qwen3 tokenizer fixtures not found under {QWEN3_TOKENIZER_DIR.parent}"


def hybrid_chat_template() -> str:
    """Qwen3's official hybrid chat template: the fixture's when present, else the embedded copy."""
    config_path = QWEN3_TOKENIZER_DIR / "tokenizer_config.json"
    if config_path.is_file():
        return json.loads(config_path.read_text(encoding="utf-8"))["chat_template"]
    return QWEN3_HYBRID_CHAT_TEMPLATE


def chat_template_for(variant: Variant) -> str:
    if variant == "hybrid":
        return hybrid_chat_template()
    if variant == "thinking-2507":
        return QWEN3_THINKING_2507_CHAT_TEMPLATE
    if variant == "instruct-2507":
        config_path = QWEN3_2507_INSTRUCT_DIR / "tokenizer_config.json"
        if not config_path.is_file():
            raise FileNotFoundError(f"The Instruct-2507 fixture is missing: {config_path}")
        return json.loads(config_path.read_text(encoding="utf-8"))["chat_template"]
    raise ValueError(f"Unknown Qwen3 tokenizer variant {variant!r}; expected one of {', '.join(VARIANTS)}.")


@functools.lru_cache(maxsize=1)
def _qwen3_tokenizer_json() -> str:
    tokenizer = _byte_level_bpe()
    tokenizer.model = models.BPE.from_file(str(QWEN3_TOKENIZER_DIR / "vocab.json"), str(QWEN3_TOKENIZER_DIR / "merges.txt"))
    return _with_added_tokens(tokenizer).to_str()


def write_qwen3_tokenizer(dst: str | Path, variant: Variant = "hybrid", *, with_tokenizer_json: bool = False) -> int:
    """Copy the real Qwen3 tokenizer into ``dst`` with ``variant``'s chat template.

    Returns the vocab size a model needs (last added id + 1 = 151669). Raises FileNotFoundError
    when the shared fixtures are missing (tests should skip first: ``qwen3_fixtures_available``).
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown Qwen3 tokenizer variant {variant!r}; expected one of {', '.join(VARIANTS)}.")
    if not qwen3_fixtures_available():
        raise FileNotFoundError(QWEN3_FIXTURES_MISSING_REASON)
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(QWEN3_TOKENIZER_DIR / "vocab.json", dst / "vocab.json")
    shutil.copyfile(QWEN3_TOKENIZER_DIR / "merges.txt", dst / "merges.txt")
    if variant == "instruct-2507":
        config = json.loads((QWEN3_2507_INSTRUCT_DIR / "tokenizer_config.json").read_text(encoding="utf-8"))
    else:
        config = json.loads((QWEN3_TOKENIZER_DIR / "tokenizer_config.json").read_text(encoding="utf-8"))
        if variant == "thinking-2507":
            config["chat_template"] = QWEN3_THINKING_2507_CHAT_TEMPLATE
            config["model_max_length"] = 262144
    (dst / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    if with_tokenizer_json:
        (dst / "tokenizer.json").write_text(_qwen3_tokenizer_json(), encoding="utf-8")
    added_ids = [int(i) for i in config["added_tokens_decoder"]]
    return max(added_ids) + 1


# Qwen3's official hybrid template (Qwen3-0.6B ... 235B-A22B tokenizer_config.json), used when the
# shared fixtures are absent so the suite stands alone. It honours `enable_thinking`.
QWEN3_HYBRID_CHAT_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\n\n</think>\n\n' }}
    {%- endif %}
{%- endif %}"""

# Qwen3-*-Thinking-2507's template: the hybrid one without the enable_thinking switch, whose
# generation prompt opens <think> itself, so the model's output holds only </think>.
QWEN3_THINKING_2507_CHAT_TEMPLATE = r"""{%- if tools %}
    {{- '<|im_start|>system\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\n\n' }}
    {%- endif %}
    {{- "# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided with function signatures within <tools></tools> XML tags:\n<tools>" }}
    {%- for tool in tools %}
        {{- "\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\n</tools>\n\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": <args-json-object>}\n</tool_call><|im_end|>\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\n' + messages[0].content + '<|im_end|>\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\n' + content + '<|im_end|>' + '\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\n<think>\n' + reasoning_content.strip('\n') + '\n</think>\n\n' + content.lstrip('\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\n<tool_response>\n' }}
        {{- content }}
        {{- '\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\n<think>\n' }}
{%- endif %}"""
