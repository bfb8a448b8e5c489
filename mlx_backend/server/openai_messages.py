"""OpenAI request bodies to ``ChatRequest``s: messages, tools, thinking, sampling and limits.

Anything this server can't honour is refused with ``OpenAIRequestError`` (HTTP 400 naming the
field), never silently changed; fields it does not know are ignored, as OpenAI-compatible
servers do.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional

from mlx_backend.events import ChatMessage, ChatRequest, SamplingParams, ToolCall
from mlx_backend.generation.sampling import preset_for

# OpenAI's default for a chat request without max_tokens is "as long as the model likes";
# the engine's own default keeps an agent that forgot the limit from filling the context.
DEFAULT_MAX_TOKENS = ChatRequest.__dataclass_fields__["max_tokens"].default
# OpenAI's documented default for /v1/completions.
DEFAULT_COMPLETION_TOKENS = 16
SAMPLING_FIELDS = ("temperature", "top_p", "top_k", "min_p", "presence_penalty")


class OpenAIRequestError(Exception):
    """A request this server refuses; ``param`` names the offending field."""

    def __init__(self, message: str, param: Optional[str] = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param


@dataclass(frozen=True)
class Translated:
    """The engine request and what the route needs besides it."""

    request: ChatRequest
    stream: bool
    include_usage: bool
    # Identifies tools and thinking settings: one conversation's cache is only reused under both.
    cache_salt: str = ""
    client_key: Optional[str] = None


def chat_request(body: Any, *, max_tokens_limit: int, thinks_by_default: bool) -> Translated:
    """A /v1/chat/completions body as an engine request (no conversation id yet)."""
    body = _object(body)
    _check_n(body)
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise OpenAIRequestError("messages must be a non-empty list of messages.", "messages")
    converted = tuple(_message(m, i) for i, m in enumerate(messages))
    kwargs = body.get("chat_template_kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise OpenAIRequestError("chat_template_kwargs must be an object.", "chat_template_kwargs")
    thinking = _optional_bool(kwargs.get("enable_thinking"), "chat_template_kwargs.enable_thinking")
    preserve = _optional_bool(kwargs.get("preserve_thinking"), "chat_template_kwargs.preserve_thinking")
    effort = kwargs.get("reasoning_effort", body.get("reasoning_effort"))
    tools = _tools(body.get("tools"), body.get("tool_choice"))
    request = ChatRequest(
        messages=converted,
        enable_thinking=thinking,
        preserve_thinking=preserve,
        reasoning_effort=effort,
        tools=tools,
        **_generation_settings(
            body, max_tokens_limit, DEFAULT_MAX_TOKENS,
            thinking=thinks_by_default if thinking is None else thinking,
        ),
    )
    salt = json.dumps([list(tools), thinking, preserve, effort], sort_keys=True, default=str)
    client_key = body.get("prompt_cache_key") or body.get("user")
    return Translated(
        request, *_streaming(body), cache_salt=salt,
        client_key=client_key if isinstance(client_key, str) else None,
    )


def completion_request(body: Any, *, max_tokens_limit: int) -> Translated:
    """A /v1/completions body: its prompt as is, no chat template, no thinking."""
    body = _object(body)
    _check_n(body)
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise OpenAIRequestError("prompt must be one non-empty string (token ids and batches are not supported).", "prompt")
    for name in ("echo", "suffix", "best_of", "logprobs"):
        if body.get(name) not in (None, False, 1 if name == "best_of" else None):
            raise OpenAIRequestError(f"{name} is not supported by this server.", name)
    settings = _generation_settings(body, max_tokens_limit, DEFAULT_COMPLETION_TOKENS, thinking=False)
    return Translated(ChatRequest(messages=(), raw_prompt=prompt, **settings), *_streaming(body))


def with_conversation(translated: Translated, conversation_id: str) -> Translated:
    return replace(translated, request=replace(translated.request, conversation_id=conversation_id))


# ----------------------------------------------------------------------------- parts


def _object(body: Any) -> Mapping[str, Any]:
    if not isinstance(body, Mapping):
        raise OpenAIRequestError("The request body must be a JSON object.")
    return body


def _check_n(body: Mapping[str, Any]) -> None:
    if body.get("n", 1) not in (1, None):
        raise OpenAIRequestError("Only n=1 is supported: this server writes one answer per request.", "n")


def _streaming(body: Mapping[str, Any]) -> tuple[bool, bool]:
    options = body.get("stream_options") or {}
    return bool(body.get("stream")), bool(isinstance(options, Mapping) and options.get("include_usage"))


def _optional_bool(value: Any, param: str) -> Optional[bool]:
    if value is None or isinstance(value, bool):
        return value
    raise OpenAIRequestError(f"{param} must be true or false.", param)


def _text(content: Any, param: str) -> str:
    """A message's content: a string, null, or a list of text parts (joined)."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        texts = []
        for part in content:
            if not isinstance(part, Mapping) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                kind = part.get("type") if isinstance(part, Mapping) else type(part).__name__
                raise OpenAIRequestError(f"{param} has a {kind!r} part; this server takes text parts only.", param)
            texts.append(part["text"])
        return "".join(texts)
    raise OpenAIRequestError(f"{param} must be a string or a list of text parts.", param)


def _message(message: Any, index: int) -> ChatMessage:
    param = f"messages[{index}]"
    if not isinstance(message, Mapping):
        raise OpenAIRequestError(f"{param} must be an object with a role and content.", param)
    role = message.get("role")
    if role == "developer":  # OpenAI's newer name for the system message
        role = "system"
    if role not in ("system", "user", "assistant", "tool"):
        raise OpenAIRequestError(f"{param}.role must be system, user, assistant or tool, not {role!r}.", f"{param}.role")
    content = _text(message.get("content"), f"{param}.content")
    calls = message.get("tool_calls") or []
    if role != "assistant" or not calls:
        return ChatMessage(role, content)
    if not isinstance(calls, list):
        raise OpenAIRequestError(f"{param}.tool_calls must be a list.", f"{param}.tool_calls")
    return ChatMessage(role, content, tuple(_tool_call(c, f"{param}.tool_calls[{i}]") for i, c in enumerate(calls)))


def _tool_call(call: Any, param: str) -> ToolCall:
    function = call.get("function") if isinstance(call, Mapping) else None
    name = function.get("name") if isinstance(function, Mapping) else None
    if not isinstance(name, str) or not name:
        raise OpenAIRequestError(f"{param} needs function.name.", param)
    raw = function.get("arguments") or "{}"
    try:
        arguments = json.loads(raw) if isinstance(raw, str) else raw
    except json.JSONDecodeError as error:
        raise OpenAIRequestError(f"{param}.function.arguments is not valid JSON: {error.msg}.", param) from error
    if not isinstance(arguments, dict):
        raise OpenAIRequestError(f"{param}.function.arguments must encode a JSON object.", param)
    return ToolCall(name, arguments, raw if isinstance(raw, str) else json.dumps(raw))


def _tools(tools: Any, choice: Any) -> tuple[Mapping[str, Any], ...]:
    """The tools the model sees. There is no constrained decoding here: "required" and a named
    function can't force a call, so they pass the tools (only the named one for a named choice)
    and the model decides; "none" shows it no tools at all."""
    if tools is None:
        tools = []
    if not isinstance(tools, list):
        raise OpenAIRequestError("tools must be a list of tool definitions.", "tools")
    if choice in (None, "auto", "required"):
        return tuple(tools)
    if choice == "none":
        return ()
    name = choice.get("function", {}).get("name") if isinstance(choice, Mapping) else None
    if not isinstance(name, str):
        raise OpenAIRequestError('tool_choice must be "none", "auto", "required" or {"type": "function", "function": {"name": ...}}.', "tool_choice")
    named = tuple(t for t in tools if isinstance(t, Mapping) and (t.get("function") or {}).get("name") == name)
    if not named:
        raise OpenAIRequestError(f"tool_choice names {name!r}, which is not among the tools.", "tool_choice")
    return named


def _generation_settings(body: Mapping[str, Any], limit: int, default_max: int, *, thinking: bool) -> dict[str, Any]:
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = min(default_max, limit)
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens <= 0:
        raise OpenAIRequestError(f"max_tokens must be a positive whole number, not {max_tokens!r}.", "max_tokens")
    if max_tokens > limit:
        raise OpenAIRequestError(f"max_tokens is {max_tokens:,}, above this server's limit of {limit:,}.", "max_tokens")
    stop = body.get("stop")
    stop = () if stop is None else (stop,) if isinstance(stop, str) else stop
    if not isinstance(stop, (list, tuple)) or not all(isinstance(s, str) for s in stop):
        raise OpenAIRequestError("stop must be a string or a list of strings.", "stop")
    seed = body.get("seed")
    if seed is not None and (not isinstance(seed, int) or isinstance(seed, bool)):
        raise OpenAIRequestError("seed must be a whole number.", "seed")
    return {"max_tokens": max_tokens, "stop": tuple(stop), "seed": seed, "sampling": _sampling(body, thinking)}


def _sampling(body: Mapping[str, Any], thinking: bool) -> Optional[SamplingParams]:
    """The request's settings over the recommended preset for its thinking mode (None: all preset)."""
    given = {name: body[name] for name in SAMPLING_FIELDS if body.get(name) is not None}
    if not given:
        return None
    for name, value in given.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise OpenAIRequestError(f"{name} must be a number.", name)
    if "top_k" in given:
        if given["top_k"] != int(given["top_k"]):
            raise OpenAIRequestError("top_k must be a whole number.", "top_k")
        given["top_k"] = int(given["top_k"])
        if given["top_k"] < 0:  # some clients send -1 for "off", as llama.cpp takes it
            given["top_k"] = 0
    return replace(preset_for(thinking), **given)
