"""A test MCP server with one tool per behaviour the client must handle.

``python toolbox.py`` serves over stdio; ``--http PORT`` serves streamable HTTP on
127.0.0.1:PORT/mcp and ``--sse PORT`` the older SSE transport on 127.0.0.1:PORT/sse.
Two copies under different names in one config offer the same tool names, which is how the
tests make names collide.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.mcpserver.utilities.types import Image

# A 1x1 red PNG: enough for the client to see an image part with its mime type.
PIXEL_PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="
)


def build(name: str) -> MCPServer:
    server = MCPServer(name, log_level="WARNING")

    @server.tool(description="Echo the text back.")
    def echo(text: str) -> str:
        return f"echo: {text}"

    @server.tool(description="Add two integers.")
    def add(a: int, b: int) -> str:
        return str(a + b)

    @server.tool(description="Return a one-pixel PNG image.")
    def pixel() -> Image:
        return Image(data=PIXEL_PNG, format="png")

    @server.tool(description="Always fails with the given message.")
    def fail(message: str) -> str:
        raise ToolError(message)

    @server.tool(description="Read an environment variable of the server process.")
    def getenv(name: str) -> str:
        return os.environ.get(name, "<unset>")

    @server.tool(description="The server's process id.")
    def pid() -> str:
        return str(os.getpid())

    @server.tool(description="Write to stderr, then exit the server process at once.")
    def crash() -> str:
        sys.stderr.write("toolbox: about to crash on purpose\n")
        sys.stderr.flush()
        os._exit(3)

    @server.tool(description="Sleep for the given number of seconds.")
    async def hang(seconds: float) -> str:
        await asyncio.sleep(seconds)
        return "woke up"

    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", type=int, metavar="PORT")
    parser.add_argument("--sse", type=int, metavar="PORT")
    parser.add_argument("--name", default="toolbox")
    parser.add_argument("--stderr-banner", default="", help="written to stderr at start")
    args = parser.parse_args()
    if args.stderr_banner:
        sys.stderr.write(args.stderr_banner + "\n")
        sys.stderr.flush()
    server = build(args.name)
    if args.http:
        server.run("streamable-http", host="127.0.0.1", port=args.http)
    elif args.sse:
        server.run("sse", host="127.0.0.1", port=args.sse)
    else:
        server.run()


if __name__ == "__main__":
    main()
