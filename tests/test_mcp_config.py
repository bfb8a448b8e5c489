"""The MCP configuration file (mcpServers JSON), the Claude Desktop import and the tool schemas.

No server is started here: reading a configuration never contacts one.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from mlx_backend.commands.cli import main as cli_main
from mlx_backend.tools.mcp import (
    McpConfigError,
    McpError,
    McpTool,
    import_claude_desktop,
    load_config,
    openai_tools,
    parse_config,
    save_config,
)
from mlx_backend.tools.mcp import config as mcp_config


def test_servers_of_every_transport_are_read_in_order():
    config = parse_config(
        json.dumps(
            {
                "mcpServers": {
                    "files": {"command": "npx", "args": ["-y", "fs"], "env": {"KEY": "v"}, "cwd": "/tmp"},
                    "web": {"url": "http://127.0.0.1:8931/mcp", "headers": {"Authorization": "Bearer t"}},
                    "typed": {"type": "http", "url": "http://localhost:1/mcp"},
                    "camel": {"type": "streamableHttp", "url": "http://localhost:2/mcp"},
                    "old": {"type": "sse", "url": "http://localhost:3/sse", "disabled": True},
                    "explicit": {"type": "stdio", "command": "server-bin", "autoApprove": ["x"]},
                }
            }
        )
    )
    assert list(config.servers) == ["files", "web", "typed", "camel", "old", "explicit"]
    files = config.servers["files"]
    assert (files.transport, files.command, files.args, dict(files.env), files.cwd) == (
        "stdio", "npx", ("-y", "fs"), {"KEY": "v"}, "/tmp"
    )
    assert config.servers["web"].transport == "streamable-http"
    assert dict(config.servers["web"].headers) == {"Authorization": "Bearer t"}
    assert config.servers["typed"].transport == config.servers["camel"].transport == "streamable-http"
    assert config.servers["old"].transport == "sse" and config.servers["old"].disabled
    assert [server.name for server in config.enabled()] == ["files", "web", "typed", "camel", "explicit"]


def test_loopback_is_told_apart_from_other_hosts():
    config = parse_config(
        json.dumps(
            {
                "mcpServers": {
                    "local": {"url": "http://127.0.0.1:9/mcp"},
                    "named": {"url": "http://localhost:9/mcp"},
                    "v6": {"url": "http://[::1]:9/mcp"},
                    "remote": {"url": "https://example.com/mcp"},
                    "program": {"command": "x"},
                }
            }
        )
    )
    assert {name: s.is_loopback for name, s in config.servers.items()} == {
        "local": True, "named": True, "v6": True, "remote": False, "program": True
    }


@pytest.mark.parametrize(
    ("text", "line", "column", "words"),
    [
        ('{\n  "mcpServers": {\n    "a": {"command": "x"},\n  }\n}\n', 4, 3, "no comma before a closing brace"),
        ('{\n  "mcpServers": {\n    "a": {"command": "x"}\n    "b": {"command": "y"}\n  }\n}', 4, 5, "comma is missing"),
        ('{\n  "mcpServers": {\n    "a": {"command": "C:\\tools\\x"}\n  }\n}', 3, 31, "backslash"),
        ('{"mcpServers": {}} {}', 1, 20, "more text after the end"),
    ],
)
def test_malformed_json_is_reported_with_line_column_and_plain_words(tmp_path, text, line, column, words):
    path = tmp_path / "mcp.json"
    path.write_text(text)
    with pytest.raises(McpConfigError) as caught:
        load_config(path)
    error = caught.value
    assert (error.line, error.column) == (line, column)
    assert words in error.problem
    assert str(error).startswith(f"{path}, line {line}, column {column}: ")


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        ({"command": "x", "args": "--port 1"}, '"args" must be a list of strings'),
        ({"command": "x", "env": {"PORT": 8080}}, '"env" value "PORT" must be a string, not a number'),
        ({"command": 3}, '"command" must be a string, not a number'),
        ({"url": "ftp://host/x"}, '"url" must be an http:// or https:// address'),
        ({"type": "websocket", "url": "ws://x"}, 'unknown type "websocket"'),
        ({"args": ["a"]}, 'needs a "command" (a program to run) or a "url"'),
        ({"command": "x", "disabled": "yes"}, '"disabled" must be true or false'),
        ("npx server", "must be an object with a command or a url, not a string"),
    ],
)
def test_a_wrong_field_names_the_server_the_field_and_the_line_of_its_entry(tmp_path, entry, words):
    path = tmp_path / "mcp.json"
    servers = {"good": {"command": "fine"}, "broken": entry}
    path.write_text(json.dumps({"mcpServers": servers}, indent=2))
    with pytest.raises(McpConfigError) as caught:
        load_config(path)
    error = caught.value
    assert error.server == "broken"
    assert f'server "broken": {words}' in str(error)
    lines = path.read_text().splitlines()
    assert lines[error.line - 1].strip().startswith('"broken":')


def test_a_missing_file_is_no_servers_unless_it_was_named_on_purpose(tmp_path):
    assert load_config(tmp_path / "absent.json").servers == {}
    with pytest.raises(McpConfigError, match="does not exist"):
        load_config(tmp_path / "absent.json", missing_ok=False)
    (tmp_path / "empty.json").write_text("  \n")
    assert load_config(tmp_path / "empty.json").servers == {}


def test_saving_is_atomic_and_keeps_what_other_clients_wrote(tmp_path):
    path = tmp_path / "sub" / "mcp.json"
    original = {
        "globalShortcut": "Ctrl+Space",
        "mcpServers": {"a": {"command": "x", "autoApprove": ["read"], "args": ["1"]}},
    }
    config = parse_config(json.dumps(original))
    save_config(config, path)
    assert json.loads(path.read_text()) == original
    assert [p.name for p in path.parent.iterdir()] == ["mcp.json"]  # no temporary file left behind
    assert load_config(path).servers["a"].args == ("1",)


def _claude_file(tmp_path: Path, servers: dict) -> Path:
    path = tmp_path / "claude_desktop_config.json"
    path.write_text(json.dumps({"mcpServers": servers, "globalShortcut": "x"}))
    return path


def test_claude_desktop_import_merges_and_keeps_our_same_named_servers(tmp_path):
    ours = tmp_path / "mcp.json"
    ours.write_text(json.dumps({"mcpServers": {"files": {"command": "our-files"}}}))
    claude = _claude_file(
        tmp_path, {"files": {"command": "their-files"}, "git": {"command": "uvx", "args": ["mcp-server-git"]}}
    )
    report = import_claude_desktop(ours, claude)
    assert (report.added, report.skipped) == (("git",), ("files",))
    merged = load_config(ours)
    assert merged.servers["files"].command == "our-files"
    assert merged.servers["git"].args == ("mcp-server-git",)
    again = import_claude_desktop(ours, claude)
    assert (again.added, again.skipped) == ((), ("files", "git"))


def test_claude_desktop_import_without_its_file_says_where_it_looked(tmp_path):
    with pytest.raises(McpConfigError, match="Claude Desktop's configuration is not at"):
        import_claude_desktop(tmp_path / "mcp.json", tmp_path / "nope.json")


def test_platform_folders(monkeypatch, tmp_path):
    monkeypatch.delenv(mcp_config.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(sys, "platform", "darwin")
    support = tmp_path / "Library" / "Application Support"
    assert mcp_config.default_config_path() == support / "Qwen Desk" / "Qwen Desk" / "mcp.json"
    assert mcp_config.claude_desktop_config_path() == support / "Claude" / "claude_desktop_config.json"
    monkeypatch.setattr(sys, "platform", "linux")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    assert mcp_config.default_config_path() == tmp_path / "data" / "Qwen Desk" / "Qwen Desk" / "mcp.json"
    assert mcp_config.claude_desktop_config_path() == tmp_path / "config" / "Claude" / "claude_desktop_config.json"
    monkeypatch.setattr(sys, "platform", "win32")
    monkeypatch.setenv("APPDATA", str(tmp_path / "Roaming"))
    assert mcp_config.claude_desktop_config_path() == tmp_path / "Roaming" / "Claude" / "claude_desktop_config.json"
    monkeypatch.setenv(mcp_config.DATA_DIR_ENV, str(tmp_path / "portable"))
    assert mcp_config.default_config_path() == tmp_path / "portable" / "mcp.json"


def test_openai_schemas_prefix_only_names_shared_by_servers():
    schema = {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}
    tools = [
        McpTool("files", "search", "Search files.", schema),
        McpTool("web", "search", "Search the web.", schema),
        McpTool("web", "fetch.page", "Fetch a page.", {}),
    ]
    schemas, names = openai_tools(tools)
    assert [s["function"]["name"] for s in schemas] == ["files__search", "web__search", "fetch_page"]
    assert schemas[0] == {
        "type": "function",
        "function": {"name": "files__search", "description": "Search files.", "parameters": schema},
    }
    assert schemas[2]["function"]["parameters"] == {"type": "object", "properties": {}}
    assert names.resolve("web__search") == ("web", "search")
    assert names.resolve("fetch_page") == ("web", "fetch.page")
    assert names.name_of("files", "search") == "files__search"
    with pytest.raises(McpError, match='tool named "search", which does not exist'):
        names.resolve("search")


def test_cli_reports_a_malformed_config_in_one_line(tmp_path, capsys):
    path = tmp_path / "mcp.json"
    path.write_text('{"mcpServers": {"a": {"command": "x",}}}')
    assert cli_main(["mcp", "list", "--config", str(path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith(f"qwen-desk: {path}, line 1, column 38: expected a name in double quotes")
    assert "Traceback" not in error


def test_cli_import_claude(tmp_path, capsys):
    ours = tmp_path / "mcp.json"
    claude = _claude_file(tmp_path, {"git": {"command": "uvx"}})
    assert cli_main(["mcp", "import-claude", "--config", str(ours), "--from", str(claude)]) == 0
    assert "added: git" in capsys.readouterr().out
    assert list(load_config(ours).servers) == ["git"]


@pytest.mark.skipif(sys.platform == "win32", reason="checked where CI runs Qt (Linux, macOS)")
def test_the_data_folder_is_the_one_qt_gives_the_app(monkeypatch, qapp):
    """mlx_backend cannot ask Qt; its folder must still be the app's (app/paths.py, AppDataLocation)."""
    QtCore = pytest.importorskip("PySide6.QtCore")
    from app.paths import APP_NAME, ORGANIZATION_NAME

    monkeypatch.delenv(mcp_config.DATA_DIR_ENV, raising=False)
    app = qapp  # the session's application (pytest-qt), names restored after
    before = (app.applicationName(), app.organizationName())
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(ORGANIZATION_NAME)
    try:
        location = QtCore.QStandardPaths.writableLocation(QtCore.QStandardPaths.StandardLocation.AppDataLocation)
    finally:
        app.setApplicationName(before[0])
        app.setOrganizationName(before[1])
    assert Path(location) == mcp_config.app_data_dir()
