"""Tool calls in a Qwen model's answer, found while it streams: one parser for the app and the server.

Qwen models call a tool by writing a ``<tool_call>`` block in their answer, in one of two forms:

- Qwen3 (and 2507): a JSON object, ``<tool_call>\\n{"name": "f", "arguments": {...}}\\n</tool_call>``;
- Qwen3.5 / 3.6 / 3.8 and Qwen3-Coder: XML, ``<tool_call>\\n<function=f>\\n<parameter=x>\\nvalue
  \\n</parameter>\\n</function>\\n</tool_call>``, where the template writes a string value as is and
  any other value as JSON.

``ToolCallStream`` takes answer text as it arrives and hands back what to show and the calls,
each complete call once its closing tag is in; a possible start of ``<tool_call>`` is held back,
so no piece of a call ever reaches the answer text. A block that can't be read (bad JSON, no
function name, never closed) comes back as a ``MalformedToolCall`` with its raw text and the
reason, for the caller to show as such and report to the model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any, Mapping, Optional, Union

from mlx_backend.events import MalformedToolCall, ToolCall
from mlx_backend.text.thinking import partial_suffix_length

OPEN = "<tool_call>"
CLOSE = "</tool_call>"

_FUNCTION = re.compile(r"<function=([^>\n]+)>(.*?)(?:</function>|$)", re.DOTALL)
_PARAMETER = re.compile(r"<parameter=([^>\n]+)>(.*?)(?:</parameter>|(?=<parameter=)|$)", re.DOTALL)


_PYTHON_BOOLEANS = {"True": True, "False": False}


ParsedCall = Union[ToolCall, MalformedToolCall]
# A tool's parameter schemas by tool name (JSON Schema ``properties``), to type XML values.
ToolSchemas = Mapping[str, Mapping[str, Any]]


def tool_schemas(tools: Optional[list[Mapping[str, Any]]]) -> dict[str, Mapping[str, Any]]:
    """Parameter properties by tool name, from OpenAI-style tool definitions
    (``{"type": "function", "function": {"name", "parameters"}}``) or bare functions."""
    schemas: dict[str, Mapping[str, Any]] = {}
    for tool in tools or ():
        function = tool.get("function", tool) if isinstance(tool, Mapping) else None
        if isinstance(function, Mapping) and isinstance(function.get("name"), str):
            parameters = function.get("parameters") or {}
            schemas[function["name"]] = (parameters.get("properties") or {}) if isinstance(parameters, Mapping) else {}
    return schemas


def parse_tool_call(body: str, schemas: Optional[ToolSchemas] = None) -> ParsedCall:
    """One ``<tool_call>`` block's content, in either form."""
    text = body.strip()
    if not text:
        return MalformedToolCall(body, "The tool call is empty.")
    if text.startswith("{"):
        return _parse_json_call(body, text)
    if text.startswith("<function="):
        return _parse_xml_call(body, text, schemas or {})
    return MalformedToolCall(body, "The tool call is neither a JSON object nor a <function=...> block.")


def _parse_json_call(body: str, text: str) -> ParsedCall:
    try:
        call = json.loads(text)
    except json.JSONDecodeError as error:
        return MalformedToolCall(body, f"The tool call is not valid JSON: {error.msg} at character {error.pos}.")
    if not isinstance(call, dict) or not isinstance(call.get("name"), str) or not call["name"].strip():
        return MalformedToolCall(body, 'The tool call has no "name".')
    arguments = call.get("arguments", {})
    if isinstance(arguments, str):  # some fine-tunes write the arguments as a JSON string
        try:
            arguments = json.loads(arguments) if arguments.strip() else {}
        except json.JSONDecodeError:
            return MalformedToolCall(body, 'The tool call\'s "arguments" is not a JSON object.')
    if arguments is None:
        arguments = {}
    if not isinstance(arguments, dict):
        return MalformedToolCall(body, 'The tool call\'s "arguments" is not a JSON object.')
    return ToolCall(call["name"].strip(), arguments, body)


def _parse_xml_call(body: str, text: str, schemas: ToolSchemas) -> ParsedCall:
    match = _FUNCTION.match(text)
    if match is None or not match.group(1).strip():
        return MalformedToolCall(body, "The tool call has no function name.")
    name = match.group(1).strip()
    if text[match.end():].strip():
        return MalformedToolCall(body, "The tool call has text after </function> (one function per <tool_call>).")
    properties = schemas.get(name, {})
    arguments: dict[str, Any] = {}
    for parameter in _PARAMETER.finditer(match.group(2)):
        key = parameter.group(1).strip()
        arguments[key] = _typed_value(_strip_one_newline(parameter.group(2)), properties.get(key))
    return ToolCall(name, arguments, body)


def _strip_one_newline(value: str) -> str:
    # The template writes "<parameter=x>\nVALUE\n</parameter>": the newlines are framing.
    if value.startswith("\n"):
        value = value[1:]
    if value.endswith("\n"):
        value = value[:-1]
    return value


def _typed_value(value: str, schema: Optional[Mapping[str, Any]]) -> Any:
    """The template writes strings as is and everything else as JSON (Qwen3.5's writes scalars
    the Python way: ``True``, ``None``). With the tool's schema the type is known; without it
    only objects and arrays are decoded (``42`` may be a string)."""
    kinds = _schema_types(schema)
    if kinds == {"string"}:
        return value
    if "boolean" in kinds and value.strip() in _PYTHON_BOOLEANS:
        return _PYTHON_BOOLEANS[value.strip()]
    if "null" in kinds and value.strip() == "None":
        return None
    if kinds or value.lstrip()[:1] in ("{", "["):
        try:
            decoded = json.loads(value)
        except json.JSONDecodeError:
            return value
        if not kinds or _json_type(decoded) in kinds or (
            "number" in kinds and isinstance(decoded, int) and not isinstance(decoded, bool)
        ):
            return decoded
    return value


def _schema_types(schema: Optional[Mapping[str, Any]]) -> set[str]:
    if not isinstance(schema, Mapping):
        return set()
    kind = schema.get("type")
    if isinstance(kind, str):
        return {kind}
    if isinstance(kind, list):
        return {k for k in kind if isinstance(k, str)}
    return set()


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


@dataclass
class StreamPiece:
    """What one chunk of answer text turned into: text to show, and calls completed in it."""

    text: str = ""
    calls: list[ParsedCall] = field(default_factory=list)


class ToolCallStream:
    """Split streamed answer text into visible text and tool calls.

    ``feed(delta)`` returns the text that is safe to show now (never a piece of a call, nor a
    trailing fragment that may become ``<tool_call>``) and the calls whose block closed;
    ``finish()`` flushes what is left: held-back text, or an unclosed call as malformed.
    """

    def __init__(self, schemas: Optional[ToolSchemas] = None):
        self._schemas = schemas or {}
        self._buffer = ""
        self._inside = False

    def feed(self, delta: str) -> StreamPiece:
        self._buffer += delta
        piece = StreamPiece()
        while True:
            if self._inside:
                end = self._buffer.find(CLOSE)
                if end < 0:
                    return piece
                piece.calls.append(parse_tool_call(self._buffer[:end], self._schemas))
                self._buffer = self._buffer[end + len(CLOSE):]
                self._inside = False
                continue
            start = self._buffer.find(OPEN)
            if start >= 0:
                piece.text += self._buffer[:start]
                self._buffer = self._buffer[start + len(OPEN):]
                self._inside = True
                continue
            keep = partial_suffix_length(self._buffer, OPEN)
            piece.text += self._buffer[: len(self._buffer) - keep]
            self._buffer = self._buffer[len(self._buffer) - keep:]
            return piece

    def finish(self) -> StreamPiece:
        rest, self._buffer = self._buffer, ""
        if self._inside:
            self._inside = False
            return StreamPiece(calls=[MalformedToolCall(rest, "The tool call was cut off before </tool_call>.")])
        return StreamPiece(text=rest)


def split_tool_calls(text: str, schemas: Optional[ToolSchemas] = None) -> tuple[str, list[ParsedCall]]:
    """A whole answer's visible text and its calls (what streaming would give, at once)."""
    stream = ToolCallStream(schemas)
    first, last = stream.feed(text), stream.finish()
    return first.text + last.text, first.calls + last.calls
