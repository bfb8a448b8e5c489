"""``qwen-desk mcp``: check the configured MCP servers, and import Claude Desktop's.

``qwen-desk mcp list`` starts every enabled server, shows its tools (or why it failed, with the
end of its stderr) and stops them again; it exits with 1 when a server failed, so a script can
check a configuration. ``qwen-desk mcp import-claude`` copies Claude Desktop's servers into
our configuration, leaving any server whose name we already have as it is.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

STDERR_LINES = 8


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "mcp",
        help="check the MCP servers (tools) Qwen can use",
        description="Manage the MCP servers whose tools Qwen can use.",
    )
    commands = parser.add_subparsers(dest="mcp_command", required=True)

    listing = commands.add_parser("list", help="start each configured server and list its tools")
    listing.add_argument("--config", type=Path, help="the configuration file (default: the app's mcp.json)")
    listing.add_argument(
        "--timeout", type=float, default=30.0, help="seconds each server may take to start (default 30)"
    )
    listing.set_defaults(run=run_list)

    importing = commands.add_parser("import-claude", help="add Claude Desktop's MCP servers to the configuration")
    importing.add_argument("--config", type=Path, help="the configuration file (default: the app's mcp.json)")
    importing.add_argument("--from", dest="source", type=Path, help="Claude Desktop's file (default: its usual place)")
    importing.set_defaults(run=run_import)
    return parser


def run_list(args: argparse.Namespace) -> int:
    from mlx_backend.tools.mcp import McpError, McpHub, default_config_path, load_config

    path = args.config or default_config_path()
    config = load_config(path, missing_ok=args.config is None)  # a file named on purpose must exist
    print(f"MCP configuration: {path}")
    if not config.servers:
        print("No MCP servers are configured. Add them under \"mcpServers\", or run: qwen-desk mcp import-claude")
        return 0
    failed = 0
    with McpHub(config, start_timeout_s=args.timeout) as hub:
        for server in config.servers.values():
            where = server.describe()
            header = f"{server.name} ({server.transport}: {where})"
            if server.disabled:
                print(f"{header}: disabled")
                continue
            try:
                tools = hub.tools(server.name)
            except McpError as error:
                failed += 1
                print(f"{header}: FAILED")
                print(f"  {error}")
                tail = [line for line in hub.stderr(server.name).splitlines() if line.strip()][-STDERR_LINES:]
                if tail:
                    print("  stderr:")
                    for line in tail:
                        print(f"    | {line}")
                continue
            print(f"{header}: started, {len(tools)} tool{'s' if len(tools) != 1 else ''}")
            for tool in tools:
                print(f"  {tool.name}" + (f" - {tool.summary}" if tool.summary else ""))
    sys.stdout.flush()
    return 1 if failed else 0


def run_import(args: argparse.Namespace) -> int:
    from mlx_backend.tools.mcp import default_config_path, import_claude_desktop

    report = import_claude_desktop(args.config or default_config_path(), args.source)
    print(f"From {report.source}:")
    print(f"  added: {', '.join(report.added) if report.added else 'nothing new'}")
    if report.skipped:
        print(f"  skipped (a server with that name is already configured): {', '.join(report.skipped)}")
    return 0
