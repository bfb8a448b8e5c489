"""A model's Jinja chat template, rendered by transformers, plus what it tells us about thinking.

Chat templates ship with downloaded models, so they are untrusted code: transformers renders them
in its immutable sandbox (no Python internals, only plain JSON-like data) with the helpers Qwen's
templates expect. Rendering through transformers is what makes our prompts token-identical to the
ones the Qwen team evaluated. On top we add what transformers leaves to the caller: clear errors
for malformed conversations, and the model's thinking behaviour, probed once per template:
whether it thinks by default, which ``reasoning_effort`` values it takes (Qwen3.8) and whether it
can keep earlier turns' reasoning (``preserve_thinking``, Qwen3.6 / 3.8).
"""

from __future__ import annotations

import dataclasses
import re
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

# Effort names tried on every template that mentions reasoning_effort, besides the quoted words
# in its source (where a template lists the values it takes).
_COMMON_EFFORTS = ("minimal", "low", "medium", "high", "xhigh", "max")
_QUOTED_WORD = re.compile(r"""['"]([A-Za-z][A-Za-z0-9_-]{0,23})['"]""")
# A value no template takes: a template that renders it as well checks nothing.
_BOGUS_EFFORT = "qwen-desk-no-such-effort"
# A history with reasoning in an earlier turn: the probe for preserve_thinking.
_REASONING_PROBE = "probe-reasoning"


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
        self.thinking_mode, self.opens_think, self.thinks_by_default, on_opens_think = self._probe_thinking()
        # Qwen3's hybrid models were trained to follow /think and /no_think in a message; the
        # Qwen3.5 family, whose template opens <think> itself when thinking (whatever its
        # default), dropped that soft switch.
        self.soft_switches = self.thinking_mode == "hybrid" and not on_opens_think
        self.reasoning_efforts = self._probe_reasoning_efforts()
        self.can_preserve_thinking, self.preserves_thinking_by_default = self._probe_preserve_thinking()

    def render(
        self,
        messages: Sequence[object],
        *,
        add_generation_prompt: bool = True,
        enable_thinking: Optional[bool] = None,
        tools: Optional[Sequence[object]] = None,
        reasoning_effort: Optional[str] = None,
        preserve_thinking: Optional[bool] = None,
    ) -> str:
        """The prompt text; an option left at None leaves its variable undefined (the template's default)."""
        return self._render(
            normalize_messages(messages),
            add_generation_prompt=add_generation_prompt,
            tools=normalize_tools(tools),
            **self.variables(enable_thinking, reasoning_effort, preserve_thinking),
        )

    def variables(
        self,
        enable_thinking: Optional[bool] = None,
        reasoning_effort: Optional[str] = None,
        preserve_thinking: Optional[bool] = None,
    ) -> TemplateData:
        """The template variables for these options, checked (RequestError for one it does not take)."""
        variables: TemplateData = {}
        if enable_thinking is not None:
            variables["enable_thinking"] = bool(enable_thinking)
        if reasoning_effort is not None:
            if not self.reasoning_efforts:
                raise RequestError(
                    "This model's chat template has no reasoning-effort setting; leave it at the default."
                )
            if reasoning_effort not in self.reasoning_efforts:
                raise RequestError(
                    f"This model takes the reasoning effort {', '.join(self.reasoning_efforts)} "
                    f"(default {self.reasoning_efforts[0]}), not {reasoning_effort!r}."
                )
            variables["reasoning_effort"] = reasoning_effort
        if preserve_thinking is not None:
            if self.can_preserve_thinking:
                variables["preserve_thinking"] = bool(preserve_thinking)
            elif preserve_thinking:
                raise RequestError(
                    "This model's chat template cannot keep earlier turns' reasoning (no preserve_thinking setting)."
                )
            # False on such a template is what it does anyway: nothing to pass.
        return variables

    def _render(
        self,
        messages: list[TemplateData],
        *,
        add_generation_prompt: bool,
        tools: Optional[list[TemplateData]],
        **options: object,
    ) -> str:
        variables = {**self._special_tokens, **options}
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

    def _probe_thinking(self) -> tuple[ThinkingMode, bool, bool, bool]:
        """Derive the thinking behaviour by rendering one probe turn three ways.

        hybrid: the template honours ``enable_thinking``; always: its generation prompt opens
        <think> by itself (Thinking-2507); never: neither (Instruct-2507). A hybrid template's
        default is whichever switch renders like leaving it unset: Qwen3 and most Qwen3.5 think
        by default, while Qwen's card says the small Qwen3.5 models (0.8B) do not.
        """
        probe: list[TemplateData] = [{"role": "user", "content": "probe"}]
        try:
            default, off, on = (
                self._render(probe, add_generation_prompt=True, tools=None, **flag)
                for flag in ({}, {"enable_thinking": False}, {"enable_thinking": True})
            )
        except RequestError as error:
            raise ModelLoadError(f"The model's chat template cannot render a simple conversation: {error}") from error
        opens_think, on_opens_think = ends_inside_thinking(default), ends_inside_thinking(on)
        if off != on or off != default:
            return "hybrid", opens_think, default != off, on_opens_think
        mode: ThinkingMode = "always" if opens_think else "never"
        return mode, opens_think, mode == "always", on_opens_think

    def _probe_reasoning_efforts(self) -> tuple[str, ...]:
        """The reasoning_effort values the template takes, its default first (empty: none).

        Found by rendering: the template must reject a made-up value (Qwen3.8 raises), each
        candidate it renders is taken, and one of them must render like leaving the variable
        undefined (the default). A template that takes any value (or prints it) or names no
        default gets no effort setting, rather than a list of guesses.
        """
        if "reasoning_effort" not in self.source:
            return ()
        probe: list[TemplateData] = [{"role": "user", "content": "probe"}]

        def attempt(**effort: object) -> Optional[str]:
            try:
                return self._render(probe, add_generation_prompt=True, tools=None, **effort)
            except RequestError:
                return None

        default = attempt()
        bogus = attempt(reasoning_effort=_BOGUS_EFFORT)
        # Candidates in the order the template's source names them (that is how it lists them).
        seen = dict.fromkeys(_QUOTED_WORD.findall(self.source))
        seen.update(dict.fromkeys(e for e in _COMMON_EFFORTS if e not in seen))
        texts = {value: attempt(reasoning_effort=value) for value in seen}
        if bogus is not None:
            return ()
        taken = [value for value, text in texts.items() if text is not None]
        first = [value for value in taken if texts[value] == default][:1]
        if not first:
            return ()
        return tuple(first + [value for value in taken if value not in first])

    def _probe_preserve_thinking(self) -> tuple[bool, bool]:
        """Does ``preserve_thinking`` change how an earlier turn's reasoning is rendered, and
        does the template keep it when the setting is left unset (Qwen3.8 does, Qwen3.6 not)?"""
        if "preserve_thinking" not in self.source:
            return False, False
        history: list[TemplateData] = [
            {"role": "user", "content": "probe"},
            {"role": "assistant", "content": "answer", "reasoning_content": _REASONING_PROBE},
            {"role": "user", "content": "probe"},
        ]
        try:
            kept, dropped, unset = (
                self._render(history, add_generation_prompt=True, tools=None, **flag)
                for flag in ({"preserve_thinking": True}, {"preserve_thinking": False}, {})
            )
        except RequestError:
            return False, False
        offered = _REASONING_PROBE in kept and _REASONING_PROBE not in dropped
        return offered, offered and _REASONING_PROBE in unset


def ends_inside_thinking(prompt: str) -> bool:
    """True when ``prompt`` leaves a <think> block open, so the model's output starts mid-thought."""
    opened = prompt.rfind(THINK_OPEN)
    return opened != -1 and prompt.rfind(THINK_CLOSE) < opened
