"""The MCP hub against real MCP servers (tests/support/mcp_servers/toolbox.py, official SDK):
stdio, streamable HTTP and SSE; results, tool errors, crashes, hangs, bad commands, the CLI.

One hub serves most tests (each stdio server costs an interpreter start on this machine);
tests that break a server use a server entry of their own.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import pytest

from mlx_backend.commands import mcp as mcp_command
from mlx_backend.tools.mcp import (
    ImagePart,
    McpError,
    McpHub,
    McpServerError,
    McpTimeoutError,
    openai_tools,
    parse_config,
)
from tests.support.mcp_servers import serve_http, stdio_entry
from tests.support.mcp_servers.toolbox import PIXEL_PNG

TOOLBOX_TOOLS = {"echo", "add", "pixel", "fail", "getenv", "pid", "crash", "hang"}
LEAK_PROBE = "QWEN_DESK_TEST_NOT_FOR_SERVERS"


def _config(servers: dict):
    return parse_config(json.dumps({"mcpServers": servers}))


@pytest.fixture(scope="module")
def http_server():
    process, port = serve_http("--http")
    yield f"http://127.0.0.1:{port}/mcp"
    process.kill()
    process.wait(timeout=10)


@pytest.fixture(scope="module")
def hub(http_server):
    # Set before any server starts: the hub must not hand our whole environment to servers.
    os.environ[LEAK_PROBE] = "leaked"
    config = _config(
        {
            "toolbox": stdio_entry(env={"X": "from the config"}),
            "crashy": stdio_entry("--stderr-banner", "crashy: started"),
            "web": {"type": "http", "url": http_server},
            "missing": {"command": "qwen-desk-no-such-program"},
            "quits": {"command": sys.executable, "args": ["-c", "import sys; sys.exit('quits: no API key set')"]},
            "off": {"command": "never-started", "disabled": True},
        }
    )
    hub = McpHub(config, start_timeout_s=20)
    yield hub
    hub.close()
    os.environ.pop(LEAK_PROBE, None)


def test_nothing_starts_before_it_is_needed(hub):
    assert hub.status("toolbox").state in ("stopped", "running")  # other tests may have run first
    fresh = McpHub(_config({"a": stdio_entry()}))
    assert fresh.status("a").state == "stopped"
    assert fresh._loop is None  # no thread, no process until a request
    fresh.close()


def test_stdio_tools_are_listed_with_descriptions_and_schemas(hub):
    tools = {tool.name: tool for tool in hub.tools("toolbox")}
    assert set(tools) == TOOLBOX_TOOLS
    add = tools["add"]
    assert (add.server, add.description) == ("toolbox", "Add two integers.")
    assert add.input_schema["properties"]["a"]["type"] == "integer"
    assert set(add.input_schema["required"]) == {"a", "b"}
    assert hub.status("toolbox").state == "running"


def test_a_call_with_arguments_returns_the_text(hub):
    result = hub.call("toolbox", "add", {"a": 19, "b": 23}, timeout_s=20)
    assert (result.text, result.is_error, result.server, result.tool) == ("42", False, "toolbox", "add")
    assert 0 < result.duration_s < 20
    assert hub.call("toolbox", "echo", {"text": "héllo"}).text == "echo: héllo"


def test_an_image_result_comes_back_as_an_image(hub):
    result = hub.call("toolbox", "pixel", {})
    (image,) = result.content
    assert isinstance(image, ImagePart)
    assert image.mime_type == "image/png"
    assert image.data == PIXEL_PNG
    assert result.text == ""


def test_a_tool_error_is_a_result_marked_as_error(hub):
    result = hub.call("toolbox", "fail", {"message": "the disk is full"})
    assert result.is_error
    assert "the disk is full" in result.text
    assert hub.call("toolbox", "add", {"a": 1, "b": 1}).text == "2"  # the server is fine


def test_environment_from_the_config_reaches_the_server_and_ours_does_not(hub):
    assert hub.call("toolbox", "getenv", {"name": "X"}).text == "from the config"
    assert hub.call("toolbox", "getenv", {"name": "PATH"}).text == os.environ["PATH"]  # the SDK's safe set
    assert hub.call("toolbox", "getenv", {"name": LEAK_PROBE}).text == "<unset>"


def test_streamable_http_server(hub):
    assert {tool.name for tool in hub.tools("web")} == TOOLBOX_TOOLS
    assert hub.call("web", "add", {"a": 2, "b": 3}).text == "5"
    assert hub.call("web", "pixel", {}).images[0].data == PIXEL_PNG


def test_a_bad_command_is_reported_and_the_others_keep_working(hub):
    with pytest.raises(McpServerError) as caught:
        hub.tools("missing")
    assert str(caught.value) == (
        'MCP server "missing" could not start: the command "qwen-desk-no-such-program" was not found.'
    )
    assert hub.status("missing").state == "failed"
    everything = hub.tools()  # the failing servers are left out, the rest are listed
    assert {tool.server for tool in everything} >= {"toolbox", "web"}
    assert not {"missing", "quits", "off"} & {tool.server for tool in everything}
    assert hub.call("toolbox", "add", {"a": 2, "b": 2}).text == "4"
    hub.stop("missing")  # forgets the failure: the next listing tries it again
    assert hub.status("missing").state == "stopped"


def test_a_server_that_exits_at_once_says_why_from_its_stderr(hub):
    with pytest.raises(McpServerError) as caught:
        hub.tools("quits")
    assert "exited before it finished starting" in str(caught.value)
    assert "quits: no API key set" in str(caught.value)
    assert "quits: no API key set" in hub.stderr("quits")
    assert caught.value.stderr == hub.stderr("quits")


def test_a_crash_during_a_call_is_clear_keeps_stderr_and_the_server_restarts(hub):
    hub.tools("crashy")
    assert "crashy: started" in hub.stderr("crashy")
    with pytest.raises(McpServerError) as caught:
        hub.call("crashy", "crash", {}, timeout_s=20)
    assert 'MCP server "crashy" stopped while it was asked to run tool "crash"' in str(caught.value)
    assert "about to crash on purpose" in str(caught.value)
    assert "about to crash on purpose" in hub.stderr("crashy")
    assert hub.status("crashy").state == "failed"
    assert hub.call("crashy", "add", {"a": 5, "b": 5}).text == "10"  # started again on demand
    assert hub.status("crashy").state == "running"


def test_a_hanging_tool_hits_the_timeout_and_the_hub_still_works(hub):
    started = time.monotonic()
    with pytest.raises(McpTimeoutError, match=r'took longer than 1 s to run tool "hang"'):
        hub.call("toolbox", "hang", {"seconds": 60}, timeout_s=1)
    assert time.monotonic() - started < 5
    assert hub.call("toolbox", "add", {"a": 3, "b": 4}).text == "7"
    assert hub.call("web", "add", {"a": 3, "b": 5}).text == "8"


def test_a_server_that_never_answers_hits_the_start_timeout():
    mute = {"command": sys.executable, "args": ["-c", "import time; time.sleep(60)"]}
    with McpHub(_config({"mute": mute}), start_timeout_s=1) as hub:
        started = time.monotonic()
        with pytest.raises(McpTimeoutError, match='"mute" did not finish starting within 1 s'):
            hub.tools("mute")
        assert time.monotonic() - started < 8  # the timeout, then the SDK's bounded kill
        assert hub.tools() == []  # a failed server is left out of the full listing


def test_unknown_and_disabled_servers(hub):
    with pytest.raises(McpError, match='no MCP server named "nope"'):
        hub.call("nope", "x", {})
    with pytest.raises(McpError, match='"off" is disabled'):
        hub.tools("off")
    assert hub.status("off").state == "disabled"


def test_openai_schemas_from_two_servers_map_back_to_the_right_one(hub):
    tools = hub.tools("toolbox") + hub.tools("web")
    schemas, names = openai_tools(tools)
    assert "toolbox__add" in {schema["function"]["name"] for schema in schemas}
    server, tool = names.resolve("web__add")
    assert hub.call(server, tool, {"a": 1, "b": 2}).text == "3"


def test_close_is_bounded_and_stops_a_busy_server(tmp_path):
    hub = McpHub(_config({"busy": stdio_entry()}), start_timeout_s=20)
    pid = int(hub.call("busy", "pid", {}).text)
    outcome: list[object] = []
    caller = threading.Thread(target=lambda: _call_into(outcome, hub))
    caller.start()
    time.sleep(0.5)  # the hang is running on the server
    started = time.monotonic()
    hub.close()
    assert time.monotonic() - started < 12
    caller.join(timeout=10)
    assert not caller.is_alive() and isinstance(outcome[0], McpError)
    assert not _alive(pid)
    with pytest.raises(McpError, match="closed"):
        hub.tools("busy")


def _call_into(outcome: list[object], hub: McpHub) -> None:
    try:
        outcome.append(hub.call("busy", "hang", {"seconds": 120}, timeout_s=120))
    except Exception as error:  # noqa: BLE001 - the test looks at what came back
        outcome.append(error)


def _alive(pid: int) -> bool:
    status = Path(f"/proc/{pid}/status")
    if sys.platform.startswith("linux"):
        return status.exists() and "\nState:\tZ" not in status.read_text()
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_sse_server():
    process, port = serve_http("--sse")
    try:
        with McpHub(_config({"old": {"type": "sse", "url": f"http://127.0.0.1:{port}/sse"}})) as hub:
            assert hub.call("old", "echo", {"text": "over sse"}).text == "echo: over sse"
    finally:
        process.kill()
        process.wait(timeout=10)


def test_an_http_server_that_is_not_running(hub):
    with McpHub(_config({"gone": {"url": "http://127.0.0.1:9/mcp"}}), start_timeout_s=10) as other:
        with pytest.raises(McpServerError, match=r'"gone" could not be reached at http://127.0.0.1:9/mcp'):
            other.tools("gone")


def _mcp_cli(argv: list[str]) -> int:
    """``qwen-desk mcp ...`` without the other subcommands' imports (cli.py is tested with the config)."""
    parser = argparse.ArgumentParser(prog="qwen-desk")
    mcp_command.add_parser(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    return args.run(args)


def test_cli_mcp_list(tmp_path, capsys):
    path = tmp_path / "mcp.json"
    path.write_text(
        json.dumps(
            {
                "mcpServers": {
                    "toolbox": stdio_entry(),
                    "quits": {"command": sys.executable, "args": ["-c", "import sys; sys.exit('no API key')"]},
                    "off": {"url": "http://127.0.0.1:9/mcp", "disabled": True},
                }
            }
        )
    )
    assert _mcp_cli(["mcp", "list", "--config", str(path)]) == 1  # a server failed
    out = capsys.readouterr().out
    assert f"MCP configuration: {path}" in out
    assert f"toolbox (stdio: {sys.executable} " in out and "started, 8 tools" in out
    assert "  add - Add two integers." in out
    assert "quits (stdio: " in out and "FAILED" in out and "    | no API key" in out
    assert "off (streamable-http: http://127.0.0.1:9/mcp): disabled" in out

    path.write_text(json.dumps({"mcpServers": {"off": {"command": "never-run", "disabled": True}}}))
    assert _mcp_cli(["mcp", "list", "--config", str(path)]) == 0  # nothing failed
