"""McpHub: every configured MCP server behind one synchronous, thread-safe API.

The hub owns one background thread running an asyncio loop; the worker thread and the CLI
call ``tools()``, ``call()`` and ``close()`` from wherever they are and wait for the answer.
Nothing starts when the hub is made: the loop starts on the first request, and each server
starts when it is first needed, then stays connected until ``stop()`` or ``close()``.
A server that fails is reported (``error()``, ``stderr()``, ``status()``) and the other
servers carry on. A request naming the failed server starts it again; listing every server's
tools leaves it out until then (or until ``stop()`` resets it), so a broken server does not
cost its start timeout on every turn.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from dataclasses import dataclass
from typing import Any, Coroutine, Mapping, TypeVar

from mlx_backend.tools.mcp.client import STDERR_LIMIT, STOP_TIMEOUT_S, ServerConnection
from mlx_backend.tools.mcp.config import McpConfig, ServerConfig
from mlx_backend.tools.mcp.errors import McpError, McpTimeoutError
from mlx_backend.tools.mcp.results import McpTool, ToolResult

T = TypeVar("T")

DEFAULT_START_TIMEOUT_S = 30.0
DEFAULT_CALL_TIMEOUT_S = 120.0
CLOSE_TIMEOUT_S = STOP_TIMEOUT_S + 4.0


@dataclass(frozen=True)
class ServerStatus:
    """``state`` is "stopped" (not needed yet), "running", "failed" or "disabled"."""

    name: str
    transport: str
    state: str
    error: str | None = None


class McpHub:
    def __init__(
        self,
        config: McpConfig,
        *,
        start_timeout_s: float = DEFAULT_START_TIMEOUT_S,
        stderr_limit: int = STDERR_LIMIT,
    ) -> None:
        self.config = config
        self._connections = {
            server.name: ServerConnection(server, start_timeout_s=start_timeout_s, stderr_limit=stderr_limit)
            for server in config.servers.values()
        }
        self._start_timeout_s = start_timeout_s
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._closed = False

    def __enter__(self) -> McpHub:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- the loop thread ----------------------------------------------------------------------

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._closed:
                raise McpError("The MCP hub is closed.")
            if self._loop is None:
                loop = asyncio.new_event_loop()
                ready = threading.Event()

                def run() -> None:
                    asyncio.set_event_loop(loop)
                    loop.call_soon(ready.set)
                    loop.run_forever()

                self._thread = threading.Thread(target=run, name="mcp-hub", daemon=True)
                self._thread.start()
                ready.wait()
                self._loop = loop
            return self._loop

    def _run(self, coroutine: Coroutine[Any, Any, T], timeout_s: float) -> T:
        try:
            loop = self._ensure_loop()
        except McpError:
            coroutine.close()  # never started: say so to Python, not as a warning
            raise
        future = asyncio.run_coroutine_threadsafe(coroutine, loop)
        try:
            return future.result(timeout_s)
        except concurrent.futures.TimeoutError:
            # The loop side has its own, shorter timeouts; this only guards against a stuck loop.
            future.cancel()
            raise McpTimeoutError(f"The MCP hub did not answer within {timeout_s:g} s.") from None

    # -- servers ------------------------------------------------------------------------------

    def _connection(self, server: str) -> ServerConnection:
        connection = self._connections.get(server)
        if connection is None:
            known = ", ".join(self._connections) or "none"
            raise McpError(f'There is no MCP server named "{server}" (configured: {known}).', server=server)
        if connection.config.disabled:
            raise McpError(f'MCP server "{server}" is disabled in the configuration.', server=server)
        return connection

    def servers(self) -> list[ServerConfig]:
        return [connection.config for connection in self._connections.values()]

    def status(self, server: str) -> ServerStatus:
        connection = self._connections.get(server)
        if connection is None:
            raise McpError(f'There is no MCP server named "{server}".', server=server)
        config = connection.config
        if config.disabled:
            state = "disabled"
        elif connection.running:
            state = "running"
        elif connection.error is not None:
            state = "failed"
        else:
            state = "stopped"
        error = str(connection.error) if connection.error is not None else None
        return ServerStatus(config.name, config.transport, state, error)

    def error(self, server: str) -> McpError | None:
        """The server's last failure, kept until it starts again."""
        return self._connection_any(server).error

    def stderr(self, server: str) -> str:
        """The tail of what a local server wrote to stderr (its current or last run)."""
        return self._connection_any(server).stderr.text()

    def _connection_any(self, server: str) -> ServerConnection:
        connection = self._connections.get(server)
        if connection is None:
            raise McpError(f'There is no MCP server named "{server}".', server=server)
        return connection

    # -- requests -----------------------------------------------------------------------------

    def tools(self, server: str | None = None) -> list[McpTool]:
        """One server's tools (its failure raises), or every enabled server's: servers that fail
        here or failed before are left out (see ``error()``)."""
        if server is not None:
            connection = self._connection(server)
            return self._run(connection.list_tools(), self._start_timeout_s * 2 + 5)
        connections = [
            c for c in self._connections.values() if not c.config.disabled and (c.running or c.error is None)
        ]
        if not connections:
            return []

        async def gather() -> list[Any]:
            return await asyncio.gather(*(c.list_tools() for c in connections), return_exceptions=True)

        tools: list[McpTool] = []
        for outcome in self._run(gather(), self._start_timeout_s * 2 + 5):
            if isinstance(outcome, McpError):
                continue
            if isinstance(outcome, BaseException):
                raise outcome
            tools += outcome
        return tools

    def call(
        self,
        server: str,
        tool: str,
        arguments: Mapping[str, Any] | None = None,
        timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
    ) -> ToolResult:
        """Run one tool. A result the tool marks as an error comes back with ``is_error``;
        a server that cannot start, stops, refuses, or takes longer than ``timeout_s`` raises
        McpServerError / McpTimeoutError."""
        connection = self._connection(server)
        return self._run(connection.call(tool, arguments, timeout_s), self._start_timeout_s + timeout_s + 5)

    def stop(self, server: str) -> None:
        """Disconnect one server (a local one is stopped) and forget its failure; the next
        request starts it again."""
        connection = self._connection_any(server)
        if self._loop is not None and not self._closed:
            self._run(connection.stop(), CLOSE_TIMEOUT_S)
        connection.error = None

    def close(self) -> None:
        """Stop every server and the loop thread, in bounded time; the hub cannot be used after."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def stop_all() -> None:
            await asyncio.gather(*(c.stop() for c in self._connections.values()), return_exceptions=True)

        future = asyncio.run_coroutine_threadsafe(stop_all(), loop)
        try:
            future.result(CLOSE_TIMEOUT_S)
        except (concurrent.futures.TimeoutError, Exception):  # noqa: BLE001 - closing must not raise
            future.cancel()
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=2.0)
        if not thread.is_alive():
            loop.close()
