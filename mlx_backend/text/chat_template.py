"""Render a model's Jinja chat template exactly as Hugging Face transformers does.

Chat templates ship with downloaded models, so they are untrusted code: they run in Jinja's
immutable sandbox, see only plain JSON-like data (never our Python objects), and get the same
environment transformers builds (trim_blocks/lstrip_blocks, loopcontrols, ``raise_exception``,
a ``tojson`` that does not HTML-escape, ``strftime_now``, a safe ``namespace``). Matching
transformers' rendering character for character is what makes our prompts token-identical to the
ones the Qwen team evaluated.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any, Literal, Optional

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.utils
from jinja2.sandbox import ImmutableSandboxedEnvironment

from mlx_backend.errors import ModelLoadError, RequestError
from mlx_backend.events import ROLES

ThinkingMode = Literal["hybrid", "always", "never"]

# transformers copies a message's reasoning from older field names into `reasoning_content`
# (the one Qwen3 templates read); we do the same so both render alike.
_REASONING_FIELDS = ("reasoning_content", "thinking", "reasoning")
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
# Private-use characters that wrap control tokens found in user strings when sanitizing (the
# same ones transformers uses), so the encoder can tell them from the template's own tokens.
CONTROL_MARK_START = "\U000f0000"
CONTROL_MARK_END = "\U000f0001"


def _raise_exception(message: str) -> None:
    raise jinja2.exceptions.TemplateError(message)


def _tojson(
    value: Any, ensure_ascii: bool = False, indent: Any = None, separators: Any = None, sort_keys: bool = False
) -> str:
    # Jinja's own tojson HTML-escapes <, >, & and ' which would change tool schemas in the prompt.
    return json.dumps(value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def _strftime_now(format: str) -> str:
    return datetime.now().strftime(format)


class _TemplateDict:
    """``dict(...)`` for templates without exposing the real type (no attribute tricks)."""

    def __call__(self, *args: Any, **kwargs: Any) -> dict:
        return dict(*args, **kwargs)

    def fromkeys(self, *args: Any, **kwargs: Any) -> dict:
        return dict.fromkeys(*args, **kwargs)


class _TemplateNamespace(jinja2.utils.Namespace):
    """Jinja's namespace, refusing underscore names so templates cannot reach CPython internals."""

    def __init__(*args: Any, **kwargs: Any) -> None:  # noqa: N805 - Jinja's own signature trick
        self, args = args[0], args[1:]
        attrs = dict(*args, **kwargs)
        for name in attrs:
            _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__init__(self, attrs)

    def __setitem__(self, name: str, value: Any) -> None:
        _TemplateNamespace._check_name(name)
        jinja2.utils.Namespace.__setitem__(self, name, value)

    @staticmethod
    def _check_name(name: Any) -> None:
        if isinstance(name, str) and name.startswith("_"):
            raise jinja2.exceptions.SecurityError(f"Chat templates cannot store the attribute {name!r} on a namespace.")


class _GenerationTag(jinja2.ext.Extension):
    """Accept transformers' ``{% generation %}...{% endgeneration %}`` marker (used for training
    masks); at inference it just renders its body."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render_body"), [], [], body).set_lineno(lineno)

    def _render_body(self, caller: Any) -> str:
        return caller()


def _environment() -> ImmutableSandboxedEnvironment:
    env = ImmutableSandboxedEnvironment(
        trim_blocks=True, lstrip_blocks=True, extensions=[_GenerationTag, jinja2.ext.loopcontrols]
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    env.globals["dict"] = _TemplateDict()
    env.globals["namespace"] = _TemplateNamespace
    return env


def plain_data(value: Any) -> Any:
    """Rebuild ``value`` from plain JSON types so the sandboxed template never sees our objects."""
    if value is None or type(value) in (str, int, float, bool):
        return value
    if isinstance(value, str):
        return str.__str__(value)
    if isinstance(value, int):
        return int.__int__(value)
    if isinstance(value, float):
        return float.__float__(value)
    if isinstance(value, Mapping):
        return {plain_data(key): plain_data(item) for key, item in value.items()}
    if isinstance(value, list):
        return [plain_data(item) for item in value]
    if isinstance(value, tuple):
        return tuple(plain_data(item) for item in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: plain_data(getattr(value, f.name)) for f in dataclasses.fields(value)}
    # Anything else becomes an inert placeholder naming its type, as transformers does.
    return f"<{type(value).__name__}>"


def normalize_messages(messages: Sequence[Any]) -> list[dict]:
    """Check a conversation and turn ChatMessage objects / dicts into plain dicts for the template."""
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise RequestError("The conversation must be a list of messages.")
    if not messages:
        raise RequestError("The conversation is empty: add at least one message.")
    normalized: list[dict] = []
    for position, message in enumerate(messages, start=1):
        data = plain_data(message)
        if not isinstance(data, dict):
            raise RequestError(f"Message {position} is not a message (expected a role and content).")
        # As transformers does: `content=None` / `tool_calls=None` (OpenAI style) mean "absent".
        data = {key: value for key, value in data.items() if value is not None}
        role = data.get("role")
        if role not in ROLES:
            raise RequestError(f"Message {position} has an unknown role {role!r}; use one of: {', '.join(ROLES)}.")
        content = data.get("content")
        # Qwen3's templates render non-text content as "", which would drop it without a word.
        if content is not None and not isinstance(content, str):
            raise RequestError(f"Message {position} ({role}) has content that is not text.")
        if content is None and not data.get("tool_calls"):
            raise RequestError(f"Message {position} ({role}) has no content.")
        reasoning = next((data[key] for key in _REASONING_FIELDS if data.get(key) is not None), None)
        if reasoning is not None:
            data = {"thinking": reasoning, **data, "reasoning_content": reasoning}
        normalized.append(data)
    return normalized


def _normalize_tools(tools: Optional[Sequence[Any]]) -> Optional[list]:
    if tools is None:
        return None
    if isinstance(tools, (str, bytes, Mapping)) or not isinstance(tools, Sequence):
        raise RequestError("Tools must be a list of JSON function schemas.")
    plain = plain_data(list(tools))
    for position, tool in enumerate(plain, start=1):
        if not isinstance(tool, dict):
            raise RequestError(f"Tool {position} is not a JSON function schema (a dict).")
    return plain


class ChatTemplate:
    """A compiled chat template plus what it tells us about the model's thinking behaviour."""

    def __init__(self, source: str, special_tokens: Optional[Mapping[str, str]] = None) -> None:
        if not isinstance(source, str) or not source.strip():
            raise ModelLoadError("The model's chat template is empty.")
        try:
            self._template = _environment().from_string(source)
        except jinja2.exceptions.TemplateSyntaxError as error:
            raise ModelLoadError(
                f"The model's chat template is not valid Jinja (line {error.lineno}: {error.message})."
            ) from error
        self.source = source
        # transformers passes the tokenizer's named special tokens (eos_token, pad_token, ...) to templates.
        self._special_tokens = {k: v for k, v in (special_tokens or {}).items() if isinstance(v, str)}
        self.thinking_mode, self.opens_think = self._probe_thinking()

    def render(
        self,
        messages: Sequence[Any],
        *,
        add_generation_prompt: bool = True,
        enable_thinking: Optional[bool] = None,
        tools: Optional[Sequence[Any]] = None,
        mark_control_tokens: Optional[re.Pattern[str]] = None,
    ) -> str:
        """The prompt text; ``enable_thinking=None`` leaves the variable undefined (model default).

        With ``mark_control_tokens`` (see ``control_token_patterns``), control tokens inside the
        messages and tools are wrapped in private markers for ``encode`` to treat as plain text.
        """
        variables: dict[str, Any] = dict(self._special_tokens)
        if enable_thinking is not None:
            variables["enable_thinking"] = bool(enable_thinking)
        plain_messages, plain_tools = normalize_messages(messages), _normalize_tools(tools)
        if mark_control_tokens is not None:
            plain_messages = mark_control_tokens_in(plain_messages, mark_control_tokens)
            plain_tools = mark_control_tokens_in(plain_tools, mark_control_tokens)
        return self._render(plain_messages, add_generation_prompt=add_generation_prompt, tools=plain_tools, **variables)

    @functools.cached_property
    def literal_text(self) -> str:
        """The template's own text and string constants, NUL-joined (no match across two of them).

        An added token found here is one the template writes itself, i.e. a control token.
        """
        ast = _environment().parse(self.source)
        literals = {node.data for node in ast.find_all(jinja2.nodes.TemplateData)}
        literals |= {node.value for node in ast.find_all(jinja2.nodes.Const) if isinstance(node.value, str)}
        return "\0".join(sorted(literals))

    def _render(self, messages: list[dict], **variables: Any) -> str:
        try:
            return self._template.render(messages=messages, documents=None, **variables)
        except jinja2.exceptions.SecurityError as error:
            raise RequestError(
                f"The model's chat template tried an unsafe operation and was stopped: {error}"
            ) from error
        except jinja2.exceptions.TemplateError as error:
            raise RequestError(f"The model's chat template rejected this conversation: {error}") from error
        except (TypeError, ValueError, KeyError, IndexError, AttributeError) as error:
            raise RequestError(f"The model's chat template failed on this conversation: {error}") from error

    def _probe_thinking(self) -> tuple[ThinkingMode, bool]:
        """Derive the thinking behaviour by rendering one probe turn three ways.

        hybrid: the template honours ``enable_thinking``; always: its generation prompt opens
        <think> by itself (Thinking-2507); never: neither (Instruct-2507).
        """
        probe = [{"role": "user", "content": "probe"}]
        variables = {"add_generation_prompt": True, "tools": None, **self._special_tokens}
        try:
            default = self._render(probe, **variables)
            off = self._render(probe, enable_thinking=False, **variables)
            on = self._render(probe, enable_thinking=True, **variables)
        except RequestError as error:
            raise ModelLoadError(f"The model's chat template cannot render a simple conversation: {error}") from error
        opens_think = ends_inside_thinking(default)
        if off != on or off != default:
            return "hybrid", opens_think
        return ("always" if opens_think else "never"), opens_think


@functools.lru_cache(maxsize=16)
def control_token_patterns(tokens: tuple[str, ...]) -> tuple[re.Pattern[str], re.Pattern[str]]:
    """(any of ``tokens``, a marked token or a lone marker); longer tokens match first."""
    longest_first = sorted(tokens, key=len, reverse=True)
    tokens_re = re.compile("|".join(map(re.escape, longest_first)) or "(?!)")
    start, end = CONTROL_MARK_START, CONTROL_MARK_END
    return tokens_re, re.compile(f"{start}({tokens_re.pattern}){end}|[{start}{end}]")


def mark_control_tokens_in(value: Any, tokens_re: re.Pattern[str]) -> Any:
    """Wrap control tokens in every string of ``value`` (dict keys excepted) with the markers."""
    if isinstance(value, str):
        # Markers already in the text are dropped so nobody can forge a marked token.
        value = value.replace(CONTROL_MARK_START, "").replace(CONTROL_MARK_END, "")
        return tokens_re.sub(f"{CONTROL_MARK_START}\\g<0>{CONTROL_MARK_END}", value)
    if isinstance(value, dict):
        return {key: mark_control_tokens_in(item, tokens_re) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [mark_control_tokens_in(item, tokens_re) for item in value]
    return value


def ends_inside_thinking(prompt: str) -> bool:
    """True when ``prompt`` leaves a <think> block open, so the model's output starts mid-thought."""
    opened = prompt.rfind(THINK_OPEN)
    return opened != -1 and prompt.rfind(THINK_CLOSE) < opened
