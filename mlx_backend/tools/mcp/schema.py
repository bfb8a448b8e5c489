"""MCP tools as OpenAI-style function schemas for ``ChatRequest.tools``, and the way back.

A tool keeps its own name when no other server offers the same one; names shared by several
servers become ``server__tool``. Function names are limited to letters, digits, ``_`` and
``-`` (64 at most), as the OpenAI format and the Qwen templates expect.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Iterable

from mlx_backend.tools.mcp.errors import McpError
from mlx_backend.tools.mcp.results import McpTool

SEPARATOR = "__"
MAX_NAME = 64
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")


@dataclass(frozen=True)
class ToolNames:
    """The model-facing name of each tool, mapped back to (server, tool)."""

    targets: dict[str, tuple[str, str]] = field(default_factory=dict)

    def resolve(self, model_name: str) -> tuple[str, str]:
        target = self.targets.get(model_name)
        if target is None:
            known = ", ".join(self.targets) or "none"
            raise McpError(f'The model asked for a tool named "{model_name}", which does not exist (tools: {known}).')
        return target

    def name_of(self, server: str, tool: str) -> str:
        for name, target in self.targets.items():
            if target == (server, tool):
                return name
        raise McpError(f'No tool "{tool}" of MCP server "{server}" was offered to the model.', server=server)


def _safe(name: str) -> str:
    cleaned = _UNSAFE.sub("_", name).strip("_") or "tool"
    if len(cleaned) <= MAX_NAME:
        return cleaned
    digest = hashlib.sha1(name.encode()).hexdigest()[:8]
    return f"{cleaned[: MAX_NAME - 9]}_{digest}"


def openai_tools(tools: Iterable[McpTool]) -> tuple[list[dict[str, Any]], ToolNames]:
    """The function schemas (in order) and the names to map the model's calls back."""
    tools = list(tools)
    shared = Counter(tool.name for tool in tools)
    schemas: list[dict[str, Any]] = []
    targets: dict[str, tuple[str, str]] = {}
    for tool in tools:
        wanted = tool.name if shared[tool.name] == 1 else f"{tool.server}{SEPARATOR}{tool.name}"
        name = base = _safe(wanted)
        number = 2
        while name in targets:  # only if cleaning made two names equal
            name = _safe(f"{base}_{number}")
            number += 1
        targets[name] = (tool.server, tool.name)
        parameters = dict(tool.input_schema) or {"type": "object", "properties": {}}
        parameters.setdefault("type", "object")
        schemas.append(
            {"type": "function", "function": {"name": name, "description": tool.description, "parameters": parameters}}
        )
    return schemas, ToolNames(targets)
