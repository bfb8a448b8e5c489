"""The Qwen3.5 / 3.6 / 3.8 chat templates: our rendering is token-identical to transformers'.

For each shared template: single and multi-turn chats, thinking on/off, reasoning in history,
preserve_thinking (3.6, 3.8), reasoning_effort (3.8), XML tool calls and tool results, system
prompts; then what the templates tell us (thinking mode, soft switches, efforts, preserve), the
errors for settings a template does not take, and that a reply re-encoded as history is exactly
the head of the next turn's prompt.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Optional

import pytest

from mlx_backend.errors import RequestError
from mlx_backend.events import ChatMessage, ChatRequest, ToolCall
from mlx_backend.generation.prompt_cache import common_prefix_length
from mlx_backend.generation.request import PreparedRequest, PromptRenderer, validate_request
from mlx_backend.text.thinking import reply_with_reasoning
from tests.support.hybrid_checkpoints import TEMPLATES, hybrid_fixtures_available, write_248k_tokenizer
from tests.test_tokenizer_248k import build_transformers_reference

pytestmark = pytest.mark.skipif(not hybrid_fixtures_available(), reason="shared Qwen3.5-family fixtures missing")

RELEASES = ("qwen3.5", "qwen3.6", "qwen3.8")

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city.",
            "parameters": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the web.",
            "parameters": {"type": "object", "properties": {"query": {"type": "string"}}},
        },
    },
]

SYSTEM = {"role": "system", "content": "You are a careful assistant."}
SINGLE = [{"role": "user", "content": "What is 2 + 2?"}]
WITH_SYSTEM = [SYSTEM, *SINGLE]
MULTI_TURN = [
    SYSTEM,
    {"role": "user", "content": "Name a prime number."},
    {"role": "assistant", "content": "7 is prime.", "reasoning_content": "Small primes: 2, 3, 5, 7."},
    {"role": "user", "content": "And an even one?"},
    {"role": "assistant", "content": "2 is the only even prime."},
    {"role": "user", "content": "Why only 2? 用中文解释。"},
]
TOOL_CALL = {
    "role": "assistant",
    "content": "Let me check.",
    "reasoning_content": "I need the weather tool.",
    "tool_calls": [
        {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}},
        {"type": "function", "function": {"name": "search", "arguments": {"query": "Paris events", "tags": ["a", 1]}}},
    ],
}
TOOL_FLOW = [
    {"role": "user", "content": "Weather in Paris, and what's on?"},
    TOOL_CALL,
    {"role": "tool", "content": '{"temp_c": 21, "sky": "clear"}'},
    {"role": "tool", "content": "Jazz festival on Saturday."},
]
TOOL_FLOW_ANSWERED = [
    SYSTEM,
    *TOOL_FLOW,
    {"role": "assistant", "content": "Sunny, 21 °C; a jazz festival.", "reasoning_content": "Summarize both."},
    {"role": "user", "content": "Thanks! Anything indoors?"},
]
CHATS = {
    "single": (SINGLE, None),
    "system": (WITH_SYSTEM, None),
    "multi_turn": (MULTI_TURN, None),
    "tool_flow": (TOOL_FLOW, TOOLS),
    "tool_flow_system": ([SYSTEM, *TOOL_FLOW], TOOLS),
    "tools_answered": (TOOL_FLOW_ANSWERED, TOOLS),
}

THINKING = (None, True, False)


def settings_for(release: str) -> list[dict]:
    """Every template option combination worth checking for ``release``."""
    options: list[dict] = [{"enable_thinking": flag} for flag in THINKING]
    if release in ("qwen3.6", "qwen3.8"):
        options += [{"enable_thinking": flag, "preserve_thinking": keep} for flag in THINKING for keep in (True, False)]
    if release == "qwen3.8":
        options += [
            {"enable_thinking": flag, "reasoning_effort": effort}
            for flag in (None, True, False)
            for effort in ("xhigh", "medium", "low")
        ]
    return [{k: v for k, v in option.items() if v is not None} for option in options]


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("templates248k")
    paths = {}
    for release in RELEASES:
        paths[release] = root / release
        write_248k_tokenizer(paths[release], release)
    return paths


@pytest.fixture(scope="module")
def ours(folders):
    from mlx_backend.text.tokenizer import Qwen3Tokenizer

    return {release: Qwen3Tokenizer.from_folder(folder) for release, folder in folders.items()}


@pytest.fixture(scope="module")
def reference(folders):
    # One transformers tokenizer; each release's template is passed as chat_template.
    return build_transformers_reference(folders["qwen3.8"])


def reference_ids(reference, release: str, messages, tools=None, add_generation_prompt=True, **options) -> list[int]:
    return reference.apply_chat_template(
        messages,
        tools=tools,
        chat_template=TEMPLATES[release].read_text(encoding="utf-8"),
        add_generation_prompt=add_generation_prompt,
        tokenize=True,
        return_dict=False,
        **options,
    )


# ------------------------------------------------------------------ token identity


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("chat", sorted(CHATS))
def test_rendering_is_token_identical_to_transformers(ours, reference, release, chat):
    messages, tools = CHATS[chat]
    tokenizer = ours[release]
    for options in settings_for(release):
        expected = reference_ids(reference, release, messages, tools, **options)
        assert tokenizer.apply_chat_template(messages, tools=tools, **options) == expected, options
        text = tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, **options)
        assert tokenizer.encode(text) == expected, options
        # Sanitizing changes nothing for messages that type no control tokens.
        sanitized = tokenizer.apply_chat_template(messages, tools=tools, sanitize_control_tokens=True, **options)
        assert sanitized == expected, options


def as_chat_messages(messages) -> tuple[ChatMessage, ...]:
    """The engine's messages: an assistant's reasoning travels in its content's think block."""
    converted = []
    for message in messages:
        content = message["content"]
        if message["role"] == "assistant" and "reasoning_content" in message:
            content = reply_with_reasoning(message["reasoning_content"], content)
        calls = tuple(
            ToolCall(call["function"]["name"], call["function"]["arguments"], raw="")
            for call in message.get("tool_calls", ())
        )
        converted.append(ChatMessage(message["role"], content, tool_calls=calls))
    return tuple(converted)


def request_options(options: dict) -> dict:
    return {
        "enable_thinking": options.get("enable_thinking"),
        "reasoning_effort": options.get("reasoning_effort"),
        "preserve_thinking": options.get("preserve_thinking"),
    }


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("chat", list(CHATS))
def test_the_engines_prompt_is_token_identical_to_transformers(ours, reference, release, chat):
    # Tool chats too: tools, assistant tool calls and tool results reach the template as
    # transformers passes them, and a request may end with tool results (the model continues).
    messages, tools = CHATS[chat]
    renderer = PromptRenderer(ours[release])
    for options in settings_for(release):
        request = ChatRequest(messages=as_chat_messages(messages), tools=tuple(tools or ()), **request_options(options))
        validate_request(request)
        thinking = renderer.thinking_for(request)
        assert thinking is (options.get("enable_thinking") is not False)
        template_options = {**options, "enable_thinking": thinking}
        expected = reference_ids(reference, release, messages, tools=tools, **template_options)
        assert renderer.prompt(request, thinking) == expected, (chat, options)


# ------------------------------------------------------------------ what the templates tell us


@pytest.mark.parametrize("release", RELEASES)
def test_thinking_mode_is_hybrid_and_off_writes_an_empty_think_block(ours, reference, release):
    tokenizer = ours[release]
    assert tokenizer.thinking_mode == "hybrid"
    decode = reference.decode
    default = decode(reference_ids(reference, release, SINGLE))
    off = decode(reference_ids(reference, release, SINGLE, enable_thinking=False))
    assert default.endswith("<|im_start|>assistant\n<think>\n")  # thinks by default
    assert off.endswith("<|im_start|>assistant\n<think>\n\n</think>\n\n")
    renderer = PromptRenderer(tokenizer)
    on_prompt = renderer.prompt(ChatRequest(messages=as_chat_messages(SINGLE)), True)
    off_prompt = renderer.prompt(ChatRequest(messages=as_chat_messages(SINGLE), enable_thinking=False), False)
    assert renderer.generation_prompt_opens_think(on_prompt)  # the reply starts inside its thought
    assert not renderer.generation_prompt_opens_think(off_prompt)


@pytest.mark.parametrize("release", RELEASES)
@pytest.mark.parametrize("switch", ["/no_think", "/think"])
def test_qwen35_family_ignores_soft_switches(ours, release, switch):
    """Qwen3.5 dropped Qwen3's /think and /no_think; only enable_thinking switches."""
    renderer = PromptRenderer(ours[release])
    assert ours[release].soft_switches is False
    request = ChatRequest(messages=(ChatMessage("user", f"Quick question {switch}"),))
    assert renderer.thinking_for(request) is True
    assert renderer.thinking_for(replace(request, enable_thinking=False)) is False


def test_qwen3_hybrid_still_follows_soft_switches(tmp_path):
    from mlx_backend.text.tokenizer import Qwen3Tokenizer
    from tests.support.tokenizers import write_tiny_tokenizer

    write_tiny_tokenizer(tmp_path)
    tokenizer = Qwen3Tokenizer.from_folder(tmp_path)
    renderer = PromptRenderer(tokenizer)
    assert tokenizer.soft_switches is True
    assert renderer.thinking_for(ChatRequest(messages=(ChatMessage("user", "hi /no_think"),))) is False


@pytest.mark.parametrize("release", RELEASES)
def test_reasoning_efforts_are_what_the_template_accepts(ours, reference, release):
    tokenizer = ours[release]
    candidates = ("xhigh", "high", "medium", "low", "minimal", "none", "max", "XHIGH")
    accepted = []
    for effort in candidates:
        try:
            reference_ids(reference, release, SINGLE, reasoning_effort=effort)
        except Exception:
            continue
        accepted.append(effort)
    if release == "qwen3.8":
        assert set(tokenizer.reasoning_efforts) == set(accepted)
        # The default first: leaving the effort unset renders like it.
        assert reference_ids(reference, release, SINGLE) == reference_ids(
            reference, release, SINGLE, reasoning_effort=tokenizer.reasoning_efforts[0]
        )
        assert tokenizer.reasoning_efforts == ("xhigh", "medium", "low")
    else:
        assert accepted == list(candidates)  # these templates ignore the variable entirely
        assert tokenizer.reasoning_efforts == ()


@pytest.mark.parametrize("release, can", [("qwen3.5", False), ("qwen3.6", True), ("qwen3.8", True)])
def test_can_preserve_thinking(ours, release, can):
    assert ours[release].can_preserve_thinking is can


@pytest.mark.parametrize("release, keeps", [("qwen3.5", False), ("qwen3.6", False), ("qwen3.8", True)])
def test_what_each_template_does_with_earlier_reasoning_by_default(ours, release, keeps):
    # Qwen3.8 keeps earlier turns' reasoning unless told not to; Qwen3.6 only when asked.
    assert ours[release].preserves_thinking_by_default is keeps


@pytest.mark.parametrize(
    "release, options, words",
    [
        ("qwen3.8", {"reasoning_effort": "high"}, ["xhigh, medium, low", "'high'"]),
        ("qwen3.8", {"reasoning_effort": "high", "enable_thinking": False}, ["'high'"]),
        ("qwen3.5", {"reasoning_effort": "low"}, ["no reasoning-effort setting"]),
        ("qwen3.6", {"reasoning_effort": "xhigh"}, ["no reasoning-effort setting"]),
        ("qwen3.5", {"preserve_thinking": True}, ["cannot keep earlier turns' reasoning"]),
    ],
)
def test_a_setting_the_template_does_not_take_is_a_clear_request_error(ours, release, options, words):
    renderer = PromptRenderer(ours[release])
    request = ChatRequest(messages=as_chat_messages(SINGLE), **options)
    with pytest.raises(RequestError) as error:
        renderer.prompt(request, renderer.thinking_for(request))
    for word in words:
        assert word in str(error.value)
    with pytest.raises(RequestError):
        ours[release].apply_chat_template(SINGLE, **options)


def test_preserve_thinking_false_on_qwen35_is_its_own_behaviour(ours, reference):
    tokenizer = ours["qwen3.5"]
    assert tokenizer.apply_chat_template(MULTI_TURN, preserve_thinking=False) == reference_ids(
        reference, "qwen3.5", MULTI_TURN
    )


def test_reasoning_effort_reaches_the_template(ours):
    tokenizer = ours["qwen3.8"]
    texts = {
        effort: tokenizer.apply_chat_template(SINGLE, tokenize=False, reasoning_effort=effort)
        for effort in ("xhigh", "medium", "low")
    }
    assert "Reasoning effort is set to low" in texts["low"]
    assert "Reasoning effort is set to xhigh" in texts["xhigh"]
    assert len(set(texts.values())) == 3


def test_tool_calls_render_as_xml(ours):
    text = ours["qwen3.6"].apply_chat_template(TOOL_FLOW, tools=TOOLS, tokenize=False)
    assert (
        "<tool_call>\n<function=get_weather>\n<parameter=city>\nParis\n</parameter>\n"
        "<parameter=days>\n3\n</parameter>\n</function>\n</tool_call>"
    ) in text
    assert '<parameter=tags>\n["a", 1]\n</parameter>' in text
    assert "<|im_start|>user\n<tool_response>\n" in text
    assert "Jazz festival on Saturday.\n</tool_response><|im_end|>" in text


# ------------------------------------------------------------------ history for the prompt cache

REASONING = "The user wants a prime. 7 is prime."
ANSWER = "7."


def history_cases():
    cases = []
    for release in RELEASES:
        keeps = {"qwen3.5": [None], "qwen3.6": [None, True, False], "qwen3.8": [None, True, False]}[release]
        efforts = [None, "medium", "low"] if release == "qwen3.8" else [None]
        for thinking in (True, False):
            for keep in keeps:
                for effort in efforts:
                    cases.append((release, thinking, keep, effort))
    return cases


def kept_reasoning(release: str, preserve: Optional[bool]) -> bool:
    """Does the next turn's prompt show this reply's reasoning (the templates' documented rules)?"""
    if release == "qwen3.8":
        return preserve is not False
    if release == "qwen3.6":
        return preserve is True
    return False  # Qwen3.5: reasoning only after the last user query


@pytest.mark.parametrize("release, thinking, preserve, effort", history_cases())
def test_history_tokens_are_the_head_of_the_next_prompt(ours, release, thinking, preserve, effort):
    tokenizer = ours[release]
    renderer = PromptRenderer(tokenizer)
    first = (ChatMessage("system", "Be brief."), ChatMessage("user", "Name a prime."))
    earlier = (ChatMessage("assistant", reply_with_reasoning("Two is even.", "2.")), ChatMessage("user", "Another?"))
    for messages in (first, first + earlier):
        request = ChatRequest(
            messages=messages, enable_thinking=thinking, preserve_thinking=preserve, reasoning_effort=effort
        )
        assert renderer.thinking_for(request) is thinking
        prompt = renderer.prompt(request, thinking)
        prepared = PreparedRequest(request, prompt, thinking, thinking, None, 8, None)
        # The reply as decode_reply hands it over: its reasoning in a think block when it thought.
        reply = reply_with_reasoning(REASONING, ANSWER, thought=thinking)
        history = renderer.history_tokens(prepared, reply)
        assert history is not None

        next_messages = (*messages, ChatMessage("assistant", reply), ChatMessage("user", "Next?"))
        follow_up = replace(request, messages=next_messages)
        next_prompt = renderer.prompt(follow_up, thinking)
        assert next_prompt[: len(history)] == history
        assert tokenizer.decode(next_prompt[len(history) :]).startswith("<|im_start|>user\nNext?<|im_end|>")

        keeps_block = kept_reasoning(release, preserve)
        assert (REASONING in tokenizer.decode(history)) is (thinking and keeps_block)
        # Where the template keeps the think block, the reply as generated already is the
        # history: the cache needs no re-encoding past its last token.
        generated = prompt + tokenizer.encode(
            (f"{REASONING}\n</think>\n\n{ANSWER}" if thinking else ANSWER) + "<|im_end|>"
        )
        matched = common_prefix_length(generated, history)
        if keeps_block:
            assert matched == len(generated)
        else:
            assert matched < len(prompt)  # the think block is dropped: the turn is rendered anew
