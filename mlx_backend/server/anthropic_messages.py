"""Anthropic Messages requests -> the engine's ChatRequest (and back, for an assistant turn).

Only what a local Qwen model can honour is accepted; anything else is refused with a message
that names the field (``messages.1.content.0.type: ...``), as Anthropic's own API does, so an
agent's author sees at once what to change. Unknown top-level fields are ignored: clients such
as Claude Code send options (``context_management``, ``service_tier`` ...) that change nothing
for a local model.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, replace
from typing import Any, Mapping, Optional, Sequence

from mlx_backend.events import ChatMessage, ChatRequest, SamplingParams, ToolCall
from mlx_backend.text.thinking import reply_with_reasoning, resolve_thinking

TEXT_ONLY = "this model reads text only"
# The engine's own limit (mlx_backend/generation/stop_sequences.py).
MAX_STOP_SEQUENCES = 16
# Families whose templates honour /think and /no_think (the Qwen3.5 family dropped them).
_SOFT_SWITCH_FAMILIES = ("qwen3", "qwen3_moe")


class AnthropicRequestError(ValueError):
    """A request this server can't run; the message names the field, for a 400."""


@dataclass(frozen=True)
class MessagesCall:
    """One translated ``/v1/messages`` request and what the reply needs to know."""

    request: ChatRequest  # conversation_id not yet set: the route picks it
    stop_sequences: tuple[str, ...]
    stream: bool
    client_key: Optional[str]  # metadata.user_id, narrowed by system prompt and tools
    salt: str  # what besides the messages makes a cached prompt differ: tools, thinking


def parse_messages_request(
    body: Any,
    *,
    max_tokens_limit: int,
    thinking_mode: str = "hybrid",
    thinks_by_default: bool = True,
    model_type: str = "",
    reasoning_efforts: Sequence[str] = (),
) -> MessagesCall:
    """Translate a request body; raises AnthropicRequestError for anything we can't honour."""
    if not isinstance(body, dict):
        raise AnthropicRequestError("The request body must be a JSON object.")
    model = body.get("model")
    if model is not None and not isinstance(model, str):
        raise AnthropicRequestError("model: must be a string (any name: this server serves one model).")
    max_tokens = _max_tokens(body.get("max_tokens"), max_tokens_limit)
    messages = [*_system(body.get("system")), *_conversation(body.get("messages"))]
    tools, tool_choice = _tools(body.get("tools")), body.get("tool_choice")
    tools = _apply_tool_choice(tools, tool_choice)
    enable_thinking = _thinking(body.get("thinking"))
    stops = _stop_sequences(body.get("stop_sequences"))
    last_user = next((m.content for m in reversed(messages) if m.role == "user"), "")
    thinks = resolve_thinking(
        last_user, enable_thinking, thinking_mode,
        soft_switches=model_type in _SOFT_SWITCH_FAMILIES, default=thinks_by_default,
    )
    request = ChatRequest(
        messages=tuple(messages),
        enable_thinking=enable_thinking,
        sampling=_sampling(body, thinks),
        max_tokens=max_tokens,
        tools=tuple(tools),
        reasoning_effort=_effort(body.get("output_config"), reasoning_efforts),
    )
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise AnthropicRequestError("stream: must be true or false.")
    salt = json.dumps({"tools": tools, "thinking": enable_thinking}, sort_keys=True, ensure_ascii=False)
    return MessagesCall(request, stops, stream, _client_key(body.get("metadata"), messages, salt), salt)


def assistant_message(content: Any, where: str = "content") -> ChatMessage:
    """An assistant turn's blocks as one ChatMessage: reasoning kept as the model wrote it
    (templates that keep earlier reasoning render it back), tool_use blocks as tool calls."""
    if isinstance(content, str):
        return ChatMessage("assistant", content)
    if not isinstance(content, list):
        raise AnthropicRequestError(f"{where}: must be a string or a list of content blocks.")
    texts: list[str] = []
    thoughts: list[str] = []
    calls: list[ToolCall] = []
    for i, block in enumerate(content):
        kind = _block_type(block, f"{where}.{i}")
        if kind == "text":
            texts.append(_string(block, "text", f"{where}.{i}"))
        elif kind == "thinking":
            thoughts.append(_string(block, "thinking", f"{where}.{i}"))
        elif kind == "redacted_thinking":
            continue  # Anthropic's encrypted reasoning: nothing a local model can read
        elif kind == "tool_use":
            name = _string(block, "name", f"{where}.{i}")
            arguments = block.get("input", {})
            if not isinstance(arguments, dict):
                raise AnthropicRequestError(f"{where}.{i}.input: must be an object.")
            calls.append(ToolCall(name, arguments, raw=""))
        elif kind in ("image", "document"):
            raise AnthropicRequestError(f"{where}.{i}: {TEXT_ONLY}; {kind} blocks are not supported.")
        else:
            raise AnthropicRequestError(f"{where}.{i}.type: {kind!r} is not supported in an assistant turn.")
    text = "".join(texts)
    return ChatMessage("assistant", reply_with_reasoning("".join(thoughts), text, thought=bool(thoughts)), tuple(calls))


# ---------------------------------------------------------------------------- pieces


def _max_tokens(value: Any, limit: int) -> int:
    if value is None:
        raise AnthropicRequestError("max_tokens: Field required.")
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise AnthropicRequestError(f"max_tokens: must be a positive whole number, not {value!r}.")
    if value > limit:
        raise AnthropicRequestError(f"max_tokens: {value} is more than this server allows ({limit}).")
    return value


def _system(system: Any) -> list[ChatMessage]:
    if system is None or system == "" or system == []:
        return []
    if isinstance(system, str):
        return [ChatMessage("system", system)]
    if not isinstance(system, list):
        raise AnthropicRequestError("system: must be a string or a list of text blocks.")
    texts = []
    for i, block in enumerate(system):
        if _block_type(block, f"system.{i}") != "text":
            raise AnthropicRequestError(f"system.{i}.type: only text blocks may be in the system prompt.")
        texts.append(_string(block, "text", f"system.{i}"))
    # One paragraph per block (the newlines a client ends a block with aren't doubled).
    return [ChatMessage("system", "\n\n".join(t.strip("\n") for t in texts))]


def _conversation(messages: Any) -> list[ChatMessage]:
    if not isinstance(messages, list) or not messages:
        raise AnthropicRequestError("messages: must be a non-empty list of messages.")
    out: list[ChatMessage] = []
    for i, message in enumerate(messages):
        where = f"messages.{i}"
        if not isinstance(message, dict):
            raise AnthropicRequestError(f"{where}: must be an object with role and content.")
        role, content = message.get("role"), message.get("content")
        if role == "assistant":
            out.append(assistant_message(content, f"{where}.content"))
        elif role == "user":
            out.extend(_user_messages(content, f"{where}.content"))
        else:
            raise AnthropicRequestError(f"{where}.role: must be 'user' or 'assistant', not {role!r}.")
    if out and out[-1].role == "assistant":
        raise AnthropicRequestError(
            f"messages.{len(messages) - 1}: the last message is the assistant's; continuing a "
            "prefilled assistant turn is not supported here, end with a user message."
        )
    return out


def _user_messages(content: Any, where: str) -> list[ChatMessage]:
    """A user turn: its text as a user message, each tool_result as a "tool" message, in order."""
    if isinstance(content, str):
        return [ChatMessage("user", content)]
    if not isinstance(content, list):
        raise AnthropicRequestError(f"{where}: must be a string or a list of content blocks.")
    out: list[ChatMessage] = []
    texts: list[str] = []

    def flush_text() -> None:
        if texts:
            out.append(ChatMessage("user", "\n\n".join(texts)))
            texts.clear()

    for i, block in enumerate(content):
        kind = _block_type(block, f"{where}.{i}")
        if kind == "text":
            texts.append(_string(block, "text", f"{where}.{i}"))
        elif kind == "tool_result":
            flush_text()
            out.append(ChatMessage("tool", _tool_result(block, f"{where}.{i}")))
        elif kind in ("image", "document"):
            raise AnthropicRequestError(f"{where}.{i}: {TEXT_ONLY}; {kind} blocks are not supported.")
        else:
            raise AnthropicRequestError(f"{where}.{i}.type: {kind!r} is not supported in a user turn.")
    flush_text()
    return out


def _tool_result(block: Mapping[str, Any], where: str) -> str:
    if not isinstance(block.get("tool_use_id"), str):
        raise AnthropicRequestError(f"{where}.tool_use_id: Field required.")
    content = block.get("content", "")
    if isinstance(content, str):
        text = content
    elif isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            kind = _block_type(part, f"{where}.content.{i}")
            if kind != "text":
                raise AnthropicRequestError(f"{where}.content.{i}: {TEXT_ONLY}; {kind} blocks are not supported.")
            parts.append(_string(part, "text", f"{where}.content.{i}"))
        text = "\n\n".join(parts)
    else:
        raise AnthropicRequestError(f"{where}.content: must be a string or a list of text blocks.")
    # The templates have no field for a failed call: say so in the text the model reads.
    return f"Error: {text}" if block.get("is_error") else text


def _tools(tools: Any) -> list[dict[str, Any]]:
    if tools is None:
        return []
    if not isinstance(tools, list):
        raise AnthropicRequestError("tools: must be a list of tools.")
    out = []
    for i, tool in enumerate(tools):
        where = f"tools.{i}"
        if not isinstance(tool, dict):
            raise AnthropicRequestError(f"{where}: must be an object with name and input_schema.")
        kind = tool.get("type", "custom")
        if kind not in ("custom", None):
            raise AnthropicRequestError(f"{where}.type: Anthropic's server tool {kind!r} is not available here; define it as a custom tool.")
        name = _string(tool, "name", where)
        schema = tool.get("input_schema")
        if not isinstance(schema, dict):
            raise AnthropicRequestError(f"{where}.input_schema: Field required (a JSON Schema object).")
        function: dict[str, Any] = {"name": name, "parameters": schema}
        if isinstance(tool.get("description"), str):
            function["description"] = tool["description"]
        out.append({"type": "function", "function": function})
    return out


def _apply_tool_choice(tools: list[dict[str, Any]], choice: Any) -> list[dict[str, Any]]:
    """Honour ``tool_choice`` as far as a prompt can.

    ``none`` offers no tools (the model can't call what it wasn't shown). ``tool`` offers only
    the named one. Nothing here *forces* a call: without constrained decoding ``any`` and
    ``tool`` behave as ``auto``, and the model may still answer in text.
    """
    if choice is None:
        return tools
    if not isinstance(choice, dict) or choice.get("type") not in ("auto", "any", "tool", "none"):
        raise AnthropicRequestError("tool_choice.type: must be 'auto', 'any', 'tool' or 'none'.")
    if choice["type"] == "none":
        return []
    if choice["type"] == "tool":
        name = choice.get("name")
        chosen = [t for t in tools if t["function"]["name"] == name]
        if not chosen:
            raise AnthropicRequestError(f"tool_choice.name: {name!r} is not one of the tools.")
        return chosen
    return tools


def _thinking(thinking: Any) -> Optional[bool]:
    """enabled -> think, disabled -> don't, absent -> the model's default. The budget can't be
    enforced (the engine has no reasoning budget): max_tokens bounds reasoning and answer together."""
    if thinking is None:
        return None
    kind = thinking.get("type") if isinstance(thinking, dict) else None
    if kind == "enabled":
        return True
    if kind == "disabled":
        return False
    if kind in ("adaptive", "between_tools"):
        return None  # the model decides as far as it can: its template's default
    raise AnthropicRequestError("thinking.type: must be 'enabled', 'disabled', 'adaptive' or 'between_tools'.")


def _effort(config: Any, efforts: Sequence[str]) -> Optional[str]:
    """``output_config.effort`` where the model's template takes that level (Qwen3.8: low,
    medium, xhigh); other levels, and models without levels, get the template's default."""
    if config is None:
        return None
    if not isinstance(config, dict):
        raise AnthropicRequestError("output_config: must be an object.")
    if config.get("format") is not None:
        raise AnthropicRequestError("output_config.format: structured outputs are not supported by this server.")
    effort = config.get("effort")
    if effort is not None and not isinstance(effort, str):
        raise AnthropicRequestError("output_config.effort: must be a string such as 'low'.")
    return effort if effort in efforts else None


def _stop_sequences(stops: Any) -> tuple[str, ...]:
    if stops is None:
        return ()
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise AnthropicRequestError("stop_sequences: must be a list of non-empty strings.")
    if len(stops) > MAX_STOP_SEQUENCES:
        raise AnthropicRequestError(f"stop_sequences: at most {MAX_STOP_SEQUENCES} are allowed.")
    return tuple(stops)


def _sampling(body: Mapping[str, Any], thinks: bool) -> Optional[SamplingParams]:
    """The client's settings over Qwen's recommended preset for the thinking mode in effect."""
    given = {}
    for field, kind in (("temperature", (int, float)), ("top_p", (int, float)), ("top_k", (int,))):
        value = body.get(field)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, kind):
            raise AnthropicRequestError(f"{field}: must be a number, not {value!r}.")
        given[field] = value
    if not given:
        return None  # the engine picks the preset itself
    from mlx_backend.generation.sampling import preset_for, validate_sampling  # MLX: only when needed
    from mlx_backend.errors import RequestError

    params = replace(preset_for(thinks), **given)
    try:
        validate_sampling(params)
    except RequestError as error:
        raise AnthropicRequestError(f"{', '.join(given)}: {error}") from error
    return params


def _client_key(metadata: Any, messages: Sequence[ChatMessage], salt: str) -> Optional[str]:
    """``metadata.user_id``, narrowed by the system prompt and tools: agents such as Claude Code
    send one id per session for their main loop and their side requests (titles, summaries),
    whose different prompts would otherwise evict the main conversation's cache."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise AnthropicRequestError("metadata: must be an object.")
    user_id = metadata.get("user_id")
    if user_id is None:
        return None
    if not isinstance(user_id, str):
        raise AnthropicRequestError("metadata.user_id: must be a string.")
    system = messages[0].content if messages and messages[0].role == "system" else ""
    digest = hashlib.sha256(f"{system}\x00{salt}".encode()).hexdigest()[:12]
    return f"{user_id}:{digest}"


def _block_type(block: Any, where: str) -> str:
    if not isinstance(block, dict) or not isinstance(block.get("type"), str):
        raise AnthropicRequestError(f"{where}.type: Field required (each content block is an object with a type).")
    return block["type"]


def _string(block: Mapping[str, Any], field: str, where: str) -> str:
    value = block.get(field)
    if not isinstance(value, str):
        raise AnthropicRequestError(f"{where}.{field}: Field required (a string).")
    return value
