"""What the hub hands back: tools as listed, and tool results as text and image parts."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Union

import mcp_types


@dataclass(frozen=True)
class McpTool:
    """One tool of one server, as the server lists it (``input_schema`` is its JSON Schema)."""

    server: str
    name: str
    description: str
    input_schema: Mapping[str, Any] = field(default_factory=dict)

    @property
    def summary(self) -> str:
        """The description's first line, for one-line listings."""
        return self.description.strip().splitlines()[0] if self.description.strip() else ""


@dataclass(frozen=True)
class TextPart:
    text: str


@dataclass(frozen=True)
class ImagePart:
    """An image a tool returned; MCP sends it base64-encoded."""

    mime_type: str
    base64_data: str

    @property
    def data(self) -> bytes:
        return base64.b64decode(self.base64_data)


ContentPart = Union[TextPart, ImagePart]


@dataclass(frozen=True)
class ToolResult:
    server: str
    tool: str
    content: tuple[ContentPart, ...]
    is_error: bool
    duration_s: float
    structured: Mapping[str, Any] | None = None

    @property
    def text(self) -> str:
        """The text parts joined by blank lines (what a model reads back)."""
        return "\n\n".join(part.text for part in self.content if isinstance(part, TextPart))

    @property
    def images(self) -> tuple[ImagePart, ...]:
        return tuple(part for part in self.content if isinstance(part, ImagePart))


def convert_content(result: mcp_types.CallToolResult) -> tuple[ContentPart, ...]:
    """Text and images as they are; other kinds become a short text, so nothing vanishes silently."""
    parts: list[ContentPart] = []
    for item in result.content:
        if isinstance(item, mcp_types.TextContent):
            parts.append(TextPart(item.text))
        elif isinstance(item, mcp_types.ImageContent):
            parts.append(ImagePart(item.mime_type, item.data))
        elif isinstance(item, mcp_types.EmbeddedResource):
            resource = item.resource
            if isinstance(resource, mcp_types.TextResourceContents):
                parts.append(TextPart(resource.text))
            else:
                mime = resource.mime_type or "binary data"
                parts.append(TextPart(f"[resource {resource.uri} ({mime}) not shown]"))
        elif isinstance(item, mcp_types.ResourceLink):
            parts.append(TextPart(f"[link: {item.name} {item.uri}]"))
        elif isinstance(item, mcp_types.AudioContent):
            parts.append(TextPart(f"[audio ({item.mime_type}) not shown]"))
        else:
            parts.append(TextPart(f"[{getattr(item, 'type', 'unknown')} content not shown]"))
    if not parts and result.structured_content is not None:
        parts.append(TextPart(json.dumps(result.structured_content, ensure_ascii=False)))
    return tuple(parts)
