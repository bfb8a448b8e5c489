"""The MCP configuration file: the ``mcpServers`` JSON that Claude Desktop, Cursor and others use.

    {"mcpServers": {
        "files": {"command": "npx", "args": ["-y", "@modelcontextprotocol/server-filesystem", "~/Documents"],
                  "env": {"KEY": "value"}, "cwd": "/optional/folder"},
        "search": {"url": "http://127.0.0.1:8931/mcp", "headers": {"Authorization": "Bearer ..."}},
        "old": {"type": "sse", "url": "http://127.0.0.1:9000/sse", "disabled": true}}}

A server is a local program (``command``, spoken to over stdio) or a ``url`` (streamable HTTP,
or SSE with ``"type": "sse"``). Keys other clients add (``autoApprove``, ``timeout``...) are kept
on save and otherwise ignored. Reading a file never contacts a server: the hub starts them
when they are first needed.
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlsplit

from mlx_backend.tools.mcp.errors import McpConfigError

DATA_DIR_ENV = "QWEN_DESK_DATA_DIR"  # the same override as app/paths.py
APP_NAME = ORGANIZATION_NAME = "Qwen Desk"
CONFIG_FILE_NAME = "mcp.json"

STDIO, STREAMABLE_HTTP, SSE = "stdio", "streamable-http", "sse"
# The spellings other clients write in "type" (or "transport") for each transport.
_TRANSPORT_NAMES = {
    "stdio": STDIO,
    "http": STREAMABLE_HTTP,
    "streamable-http": STREAMABLE_HTTP,
    "streamable_http": STREAMABLE_HTTP,
    "streamablehttp": STREAMABLE_HTTP,
    "sse": SSE,
}


@dataclass(frozen=True)
class ServerConfig:
    """One entry of ``mcpServers``; ``entry`` is the JSON object as written, kept for saving."""

    name: str
    transport: str
    command: str | None = None
    args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    url: str | None = None
    headers: Mapping[str, str] = field(default_factory=dict)
    disabled: bool = False
    entry: Mapping[str, Any] = field(default_factory=dict, compare=False, repr=False)

    @property
    def is_loopback(self) -> bool:
        """True for stdio servers and URLs on this machine (localhost, 127.x, ::1)."""
        if self.url is None:
            return True
        host = (urlsplit(self.url).hostname or "").lower()
        return host == "localhost" or host.startswith("127.") or host == "::1"

    def describe(self) -> str:
        """One line for listings: the transport and what it runs or where it connects."""
        if self.transport == STDIO:
            return " ".join([self.command or "", *self.args]).strip()
        return self.url or ""


@dataclass
class McpConfig:
    """The servers of one file, in the file's order, plus any other top-level keys it had."""

    servers: dict[str, ServerConfig] = field(default_factory=dict)
    path: Path | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def enabled(self) -> list[ServerConfig]:
        return [server for server in self.servers.values() if not server.disabled]

    def to_json(self) -> dict[str, Any]:
        return {**self.extra, "mcpServers": {name: dict(s.entry) for name, s in self.servers.items()}}


@dataclass(frozen=True)
class ImportReport:
    """What an import added and which servers it left alone because the name was taken."""

    source: Path
    added: tuple[str, ...]
    skipped: tuple[str, ...]


# -- where the files live ---------------------------------------------------------------------


def app_data_dir() -> Path:
    """The app's data folder, as app/paths.py gets it from Qt (AppDataLocation), without Qt.

    Qt puts the organization and application names under the platform folder; both are
    "Qwen Desk". QWEN_DESK_DATA_DIR overrides it, as in the app. The folder is not created.
    """
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override).expanduser()
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    elif sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / ORGANIZATION_NAME / APP_NAME


def default_config_path() -> Path:
    return app_data_dir() / CONFIG_FILE_NAME


def claude_desktop_config_path() -> Path:
    """Where Claude Desktop keeps its ``claude_desktop_config.json`` on this platform."""
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    elif sys.platform == "win32":
        base = Path(os.environ.get("APPDATA") or Path.home() / "AppData" / "Roaming")
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "Claude" / "claude_desktop_config.json"


# -- reading ----------------------------------------------------------------------------------

# json's messages, said for someone editing the file by hand.
_JSON_PROBLEMS = (
    ("Expecting ',' delimiter", "a comma is missing between two items, or a bracket is not closed"),
    ("Expecting ':' delimiter", "a colon is missing after a name"),
    (
        "Expecting property name enclosed in double quotes",
        "expected a name in double quotes (JSON allows no comma before a closing brace, and no comments)",
    ),
    ("Expecting value", "expected a value here (JSON allows no comma before a closing bracket)"),
    ("Unterminated string", "a quoted text is not closed"),
    ("Invalid control character", "a quoted text has a line break or tab in it (write \\n or \\t)"),
    ("Invalid \\escape", "a backslash in quoted text must be doubled (\\\\), e.g. in Windows paths"),
    ("Extra data", "there is more text after the end of the JSON object"),
)


def _plain_json_problem(message: str) -> str:
    for prefix, plain in _JSON_PROBLEMS:
        if message.startswith(prefix):
            return plain
    return message


def load_config(path: Path | str | None = None, *, missing_ok: bool = True) -> McpConfig:
    """Read a config file (the default one if ``path`` is None); a missing file is no servers."""
    path = Path(path).expanduser() if path is not None else default_config_path()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        if missing_ok:
            return McpConfig(path=path)
        raise McpConfigError("the file does not exist", path=path) from None
    except (OSError, UnicodeDecodeError) as error:
        raise McpConfigError(f"the file cannot be read ({error})", path=path) from None
    return parse_config(text, path=path)


def parse_config(text: str, *, path: Path | None = None) -> McpConfig:
    """Parse the JSON text of a config; every problem is a McpConfigError naming where it is."""
    if not text.strip():
        return McpConfig(path=path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise McpConfigError(
            _plain_json_problem(error.msg), path=path, line=error.lineno, column=error.colno
        ) from None
    if not isinstance(data, dict):
        raise McpConfigError('the file must hold one JSON object, like {"mcpServers": {...}}', path=path, line=1)
    extra = {key: value for key, value in data.items() if key != "mcpServers"}
    servers_json = data.get("mcpServers", {})
    if not isinstance(servers_json, dict):
        raise McpConfigError(
            '"mcpServers" must be an object of named servers', path=path, line=_line_of_key(text, "mcpServers")
        )
    servers = {}
    for name, entry in servers_json.items():
        line = _line_of_key(text, name, after=_offset_of_key(text, "mcpServers"))
        servers[name] = _parse_server(name, entry, path=path, line=line)
    return McpConfig(servers=servers, path=path, extra=extra)


def _parse_server(name: str, entry: Any, *, path: Path | None, line: int | None) -> ServerConfig:
    def problem(text: str) -> McpConfigError:
        return McpConfigError(f'server "{name}": {text}', path=path, line=line, server=name)

    if not name.strip():
        raise problem("a server needs a name")
    if not isinstance(entry, dict):
        raise problem(f"must be an object with a command or a url, not {_kind(entry)}")

    def string(key: str) -> str | None:
        value = entry.get(key)
        if value is not None and not isinstance(value, str):
            raise problem(f'"{key}" must be a string, not {_kind(value)}')
        return value

    def strings(key: str) -> tuple[str, ...]:
        value = entry.get(key, [])
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise problem(f'"{key}" must be a list of strings, like ["--port", "8080"]')
        return tuple(value)

    def string_map(key: str) -> dict[str, str]:
        value = entry.get(key, {})
        if not isinstance(value, dict):
            raise problem(f'"{key}" must be an object of names and string values, not {_kind(value)}')
        for item_key, item in value.items():
            if not isinstance(item, str):
                raise problem(f'"{key}" value "{item_key}" must be a string, not {_kind(item)}')
        return dict(value)

    disabled = entry.get("disabled", False)
    if not isinstance(disabled, bool):
        raise problem(f'"disabled" must be true or false, not {_kind(disabled)}')
    declared = string("type") or string("transport")
    command, url = string("command"), string("url")
    if declared is not None:
        transport = _TRANSPORT_NAMES.get(declared.strip().lower())
        if transport is None:
            raise problem(f'unknown type "{declared}" (use "stdio", "http" or "sse")')
    elif command is not None:
        transport = STDIO
    elif url is not None:
        transport = STREAMABLE_HTTP
    else:
        raise problem('needs a "command" (a program to run) or a "url" (a server to connect to)')

    if transport == STDIO:
        if not command or not command.strip():
            raise problem('needs a "command": the program that runs the server')
        return ServerConfig(
            name=name,
            transport=STDIO,
            command=command,
            args=strings("args"),
            env=string_map("env"),
            cwd=string("cwd"),
            disabled=disabled,
            entry=entry,
        )
    if not url:
        raise problem(f'needs a "url" for the {transport} transport')
    scheme = urlsplit(url).scheme.lower()
    if scheme not in ("http", "https") or not urlsplit(url).hostname:
        raise problem(f'"url" must be an http:// or https:// address, not "{url}"')
    return ServerConfig(
        name=name, transport=transport, url=url, headers=string_map("headers"), disabled=disabled, entry=entry
    )


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    kinds = {bool: "true/false", int: "a number", float: "a number", str: "a string", list: "a list", dict: "an object"}
    return kinds.get(type(value), type(value).__name__)


def _offset_of_key(text: str, key: str, after: int = 0) -> int:
    match = re.compile(re.escape(json.dumps(key)) + r"\s*:").search(text, after)
    return match.start() if match else after


def _line_of_key(text: str, key: str, after: int = 0) -> int | None:
    """The line where ``"key":`` first appears (after an offset): where that entry starts."""
    match = re.compile(re.escape(json.dumps(key)) + r"\s*:").search(text, after)
    return text.count("\n", 0, match.start()) + 1 if match else None


# -- writing ----------------------------------------------------------------------------------


def save_config(config: McpConfig, path: Path | str | None = None) -> Path:
    """Write the config atomically (a temporary file beside it, then a rename)."""
    path = Path(path).expanduser() if path is not None else (config.path or default_config_path())
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(config.to_json(), indent=2, ensure_ascii=False) + "\n"
    descriptor, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    config.path = path
    return path


def merge_servers(target: McpConfig, source: McpConfig) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """Add the source's servers to the target; a name already in the target is left as it is."""
    added, skipped = [], []
    for name, server in source.servers.items():
        if name in target.servers:
            skipped.append(name)
        else:
            target.servers[name] = server
            added.append(name)
    return tuple(added), tuple(skipped)


def import_claude_desktop(
    config_path: Path | str | None = None, claude_path: Path | str | None = None
) -> ImportReport:
    """Merge Claude Desktop's servers into our config (saved only if something was added)."""
    source_path = Path(claude_path).expanduser() if claude_path is not None else claude_desktop_config_path()
    if not source_path.is_file():
        raise McpConfigError(f"Claude Desktop's configuration is not at {source_path}")
    source = load_config(source_path, missing_ok=False)
    target = load_config(config_path)
    added, skipped = merge_servers(target, source)
    if added:
        save_config(target)
    return ImportReport(source=source_path, added=added, skipped=skipped)
