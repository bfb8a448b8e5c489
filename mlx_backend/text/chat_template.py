"""A model's Jinja chat template, rendered by transformers, plus what it tells us about thinking.

Chat templates ship with downloaded models, so they are untrusted code: transformers renders them
in its immutable sandbox (no Python internals, only plain JSON-like data) with the helpers Qwen's
templates expect. Rendering through transformers is what makes our prompts token-identical to the
ones the Qwen team evaluated. On top we add what transformers leaves to the caller: clear errors
for malformed conversations, and the model's thinking behaviour, probed once per template.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Literal, Optional

import jinja2.exceptions
from transformers.utils.chat_template_utils import render_jinja_template

from mlx_backend.errors import ModelLoadError, RequestError
from mlx_backend.events import ROLES

ThinkingMode = Literal["hybrid", "always", "never"]

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

TemplateData = dict[str, object]


def _as_dict(message: object) -> Optional[TemplateData]:
    if isinstance(message, Mapping):
        return dict(message)
    if dataclasses.is_dataclass(message) and not isinstance(message, type):
        return {field.name: getattr(message, field.name) for field in dataclasses.fields(message)}
    return None


def normalize_messages(messages: Sequence[object]) -> list[TemplateData]:
    """Check a conversation and turn ChatMessage objects / dicts into dicts for the template.

    transformers would render a malformed message silently (Qwen3's templates render non-text
    content as "") or fail with a Python error; we refuse it with a message the user can act on.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise RequestError("The conversation must be a list of messages.")
    if not messages:
        raise RequestError("The conversation is empty: add at least one message.")
    normalized: list[TemplateData] = []
    for position, message in enumerate(messages, start=1):
        data = _as_dict(message)
        if data is None:
            raise RequestError(f"Message {position} is not a message (expected a role and content).")
        # As transformers does: `content=None` / `tool_calls=None` (OpenAI style) mean "absent".
        data = {key: value for key, value in data.items() if value is not None}
        role = data.get("role")
        if role not in ROLES:
            raise RequestError(f"Message {position} has an unknown role {role!r}; use one of: {', '.join(ROLES)}.")
        content = data.get("content")
        if content is not None and not isinstance(content, str):
            raise RequestError(f"Message {position} ({role}) has content that is not text.")
        if content is None and not data.get("tool_calls"):
            raise RequestError(f"Message {position} ({role}) has no content.")
        normalized.append(data)
    return normalized


def normalize_tools(tools: Optional[Sequence[object]]) -> Optional[list[TemplateData]]:
    if tools is None:
        return None
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise RequestError("Tools must be a list of JSON function schemas.")
    for position, tool in enumerate(tools, start=1):
        if not isinstance(tool, Mapping):
            raise RequestError(f"Tool {position} is not a JSON function schema (a dict).")
    return [dict(tool) for tool in tools]


def template_errors_as_request_errors(error: Exception) -> Exception:
    """What a failure while rendering means for the user (syntax errors are the model's fault)."""
    if isinstance(error, jinja2.exceptions.TemplateSyntaxError):
        return ModelLoadError(f"The model's chat template is not valid Jinja (line {error.lineno}: {error.message}).")
    if isinstance(error, jinja2.exceptions.SecurityError):
        return RequestError(f"The model's chat template tried an unsafe operation and was stopped: {error}")
    if isinstance(error, jinja2.exceptions.TemplateError):
        return RequestError(f"The model's chat template rejected this conversation: {error}")
    return RequestError(f"The model's chat template failed on this conversation: {error}")


# What a template (or transformers around it) raises on a conversation it cannot render.
TEMPLATE_FAILURES = (jinja2.exceptions.TemplateError, TypeError, ValueError, KeyError, IndexError, AttributeError)


class ChatTemplate:
    """A chat template's source plus what it tells us about the model's thinking behaviour."""

    def __init__(self, source: str, special_tokens: Optional[Mapping[str, str]] = None) -> None:
        if not isinstance(source, str) or not source.strip():
            raise ModelLoadError("The model's chat template is empty.")
        self.source = source
        # transformers passes the tokenizer's named special tokens (eos_token, pad_token, ...) to templates.
        self._special_tokens = {k: v for k, v in (special_tokens or {}).items() if isinstance(v, str)}
        self.thinking_mode, self.opens_think = self._probe_thinking()

    def render(
        self,
        messages: Sequence[object],
        *,
        add_generation_prompt: bool = True,
        enable_thinking: Optional[bool] = None,
        tools: Optional[Sequence[object]] = None,
    ) -> str:
        """The prompt text; ``enable_thinking=None`` leaves the variable undefined (model default)."""
        return self._render(
            normalize_messages(messages),
            add_generation_prompt=add_generation_prompt,
            enable_thinking=enable_thinking,
            tools=normalize_tools(tools),
        )

    def _render(
        self,
        messages: list[TemplateData],
        *,
        add_generation_prompt: bool,
        enable_thinking: Optional[bool],
        tools: Optional[list[TemplateData]],
    ) -> str:
        variables = dict(self._special_tokens)
        if enable_thinking is not None:
            variables["enable_thinking"] = bool(enable_thinking)
        try:
            rendered, _ = render_jinja_template(
                conversations=[messages],
                tools=tools,
                chat_template=self.source,
                add_generation_prompt=add_generation_prompt,
                **variables,
            )
        except TEMPLATE_FAILURES as error:
            raise template_errors_as_request_errors(error) from error
        return rendered[0]

    def _probe_thinking(self) -> tuple[ThinkingMode, bool]:
        """Derive the thinking behaviour by rendering one probe turn three ways.

        hybrid: the template honours ``enable_thinking``; always: its generation prompt opens
        <think> by itself (Thinking-2507); never: neither (Instruct-2507).
        """
        probe: list[TemplateData] = [{"role": "user", "content": "probe"}]
        try:
            default, off, on = (
                self._render(probe, add_generation_prompt=True, enable_thinking=flag, tools=None)
                for flag in (None, False, True)
            )
        except RequestError as error:
            raise ModelLoadError(f"The model's chat template cannot render a simple conversation: {error}") from error
        opens_think = ends_inside_thinking(default)
        if off != on or off != default:
            return "hybrid", opens_think
        return ("always" if opens_think else "never"), opens_think


def ends_inside_thinking(prompt: str) -> bool:
    """True when ``prompt`` leaves a <think> block open, so the model's output starts mid-thought."""
    opened = prompt.rfind(THINK_OPEN)
    return opened != -1 and prompt.rfind(THINK_CLOSE) < opened
