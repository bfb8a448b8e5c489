"""One connection to one MCP server, on the hub's event loop (see hub.py for the sync API).

The SDK's ``Client`` must be entered and left in the same task, so each connection has an
owner task that holds it open until asked to stop; requests run in their own tasks beside it.
A local server's stderr goes through a pipe into a bounded tail (``StderrTail``): it is what
explains most failures, and it must never fill a pipe and block the server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from contextlib import asynccontextmanager
from typing import Any, AsyncIterator, Mapping

import anyio
import mcp_types
from mcp import Client
from mcp.client.stdio import StdioServerParameters, stdio_client
from mcp.shared.exceptions import MCPError
from pydantic import ValidationError

from mlx_backend.tools.mcp.config import SSE, STDIO, ServerConfig
from mlx_backend.tools.mcp.errors import McpError, McpServerError, McpTimeoutError
from mlx_backend.tools.mcp.results import McpTool, ToolResult, convert_content

logger = logging.getLogger(__name__)

CLIENT_INFO = mcp_types.Implementation(name="Qwen Desk", version="0.1.0")
STDERR_LIMIT = 16 * 1024
# The SDK's stdio shutdown is bounded (stdin close, 2 s, SIGTERM, 2 s, SIGKILL): allow for it.
STOP_TIMEOUT_S = 8.0
_LIST_PAGE_CAP = 100


class StderrTail:
    """Reads a child's stderr from a pipe in a thread and keeps the last ``limit`` bytes."""

    def __init__(self, limit: int = STDERR_LIMIT) -> None:
        self._limit = limit
        self._buffer = bytearray()
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._done.set()

    def open(self):
        """A new pipe for the next child (the tail is cleared); returns the write end as a file."""
        read_fd, write_fd = os.pipe()
        with self._lock:
            self._buffer.clear()
        self._done.clear()
        threading.Thread(target=self._read, args=(read_fd,), name="mcp-stderr", daemon=True).start()
        return os.fdopen(write_fd, "w")

    def _read(self, read_fd: int) -> None:
        try:
            while chunk := os.read(read_fd, 4096):
                with self._lock:
                    self._buffer += chunk
                    del self._buffer[: max(0, len(self._buffer) - self._limit)]
        except OSError:
            pass
        finally:
            os.close(read_fd)
            self._done.set()

    async def settle(self, timeout_s: float = 0.5) -> None:
        """Wait briefly for the child's last words after it exited (EOF on the pipe)."""
        deadline = time.monotonic() + timeout_s
        while not self._done.is_set() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)

    def text(self) -> str:
        with self._lock:
            return self._buffer.decode("utf-8", errors="replace")

    def last_line(self) -> str:
        lines = [line.strip() for line in self.text().splitlines() if line.strip()]
        return lines[-1] if lines else ""


@asynccontextmanager
async def _stdio_transport(config: ServerConfig, stderr: StderrTail) -> AsyncIterator[Any]:
    params = StdioServerParameters(
        command=os.path.expanduser(config.command or ""),
        args=list(config.args),
        env=dict(config.env) or None,
        cwd=os.path.expanduser(config.cwd) if config.cwd else None,
    )
    errlog = stderr.open()
    try:
        async with stdio_client(params, errlog=errlog) as streams:
            # The child has its copy; ours must go so the tail sees EOF when the child exits.
            errlog.close()
            yield streams
    finally:
        errlog.close()


@asynccontextmanager
async def _http_transport(config: ServerConfig) -> AsyncIterator[Any]:
    import httpx2  # the SDK's HTTP client
    from mcp.client.streamable_http import streamable_http_client

    # The SDK's own defaults: 30 s to connect or write, 300 s for a response stream to go quiet.
    timeout = httpx2.Timeout(30.0, read=300.0)
    async with httpx2.AsyncClient(headers=dict(config.headers), timeout=timeout) as http:
        async with streamable_http_client(config.url or "", http_client=http) as streams:
            yield streams


def _sse_transport(config: ServerConfig):
    from mcp.client.sse import sse_client

    return sse_client(config.url or "", headers=dict(config.headers) or None)


def _leaf(error: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups from anyio task groups."""
    while isinstance(error, BaseExceptionGroup) and error.exceptions:
        error = error.exceptions[0]
    return error


class ServerConnection:
    """Starts a server on first need, keeps it connected, lists and calls its tools."""

    def __init__(self, config: ServerConfig, *, start_timeout_s: float, stderr_limit: int = STDERR_LIMIT):
        self.config = config
        self.start_timeout_s = start_timeout_s
        self.stderr = StderrTail(stderr_limit)
        self.error: McpError | None = None  # the last failure, until a start succeeds
        self._stopping = False  # a deliberate stop is not a failure
        self._client: Client | None = None
        self._tools: list[McpTool] | None = None
        self._owner: asyncio.Task | None = None
        self._stop: asyncio.Event | None = None
        self._lock = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def running(self) -> bool:
        return self._client is not None

    # -- lifecycle ----------------------------------------------------------------------------

    async def ensure_started(self) -> Client:
        async with self._lock:
            if self._client is None:
                await self._start()
            assert self._client is not None
            return self._client

    def _transport(self):
        if self.config.transport == STDIO:
            return _stdio_transport(self.config, self.stderr)
        if self.config.transport == SSE:
            return _sse_transport(self.config)
        return _http_transport(self.config)

    async def _start(self) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future = loop.create_future()
        self._stopping = False
        self._stop = asyncio.Event()
        self._owner = asyncio.create_task(self._own(ready), name=f"mcp-{self.name}")
        try:
            await asyncio.wait_for(asyncio.shield(ready), self.start_timeout_s)
        except asyncio.TimeoutError:
            await self.stop()
            self.error = McpTimeoutError(
                self._with_stderr(
                    f'MCP server "{self.name}" did not finish starting within {self.start_timeout_s:g} s.'
                ),
                server=self.name,
                stderr=self.stderr.text(),
            )
            raise self.error from None
        except Exception as error:  # noqa: BLE001 - every start failure is reported the same way
            await self.stop()
            await self.stderr.settle()
            self.error = self._start_error(_leaf(error))
            raise self.error from None
        self.error = None

    async def _own(self, ready: asyncio.Future) -> None:
        try:
            async with Client(self._transport(), client_info=CLIENT_INFO, cache=None) as client:
                self._client = client
                ready.set_result(None)
                assert self._stop is not None
                await self._stop.wait()
        except BaseException as error:  # noqa: BLE001 - the owner reports, never raises into the loop
            if not ready.done():
                if isinstance(error, Exception):
                    ready.set_exception(error)
                else:  # cancelled (a start timeout or close): the starter has stopped waiting
                    ready.cancel()
            elif not isinstance(error, asyncio.CancelledError):
                logger.debug("MCP server %s: connection ended with %r", self.name, error)
            if isinstance(error, asyncio.CancelledError):
                raise
        finally:
            self._client = None
            self._tools = None

    async def stop(self) -> None:
        """Close the connection (a local server is stopped, then killed if it will not go)."""
        owner, self._owner = self._owner, None
        if owner is None:
            return
        self._stopping = True
        if self._client is None:
            owner.cancel()  # still starting: nothing to close politely (the SDK still kills the child)
        if self._stop is not None:
            self._stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(owner), STOP_TIMEOUT_S)
        except asyncio.TimeoutError:
            owner.cancel()
            await asyncio.wait({owner}, timeout=2.0)
        except BaseException:  # noqa: BLE001 - already logged by the owner
            pass
        self._client = None
        self._tools = None

    # -- requests -----------------------------------------------------------------------------

    async def list_tools(self) -> list[McpTool]:
        client = await self.ensure_started()
        if self._tools is None:
            tools: list[McpTool] = []
            cursor = None
            try:
                with anyio.fail_after(self.start_timeout_s):
                    for _ in range(_LIST_PAGE_CAP):
                        page = await client.list_tools(cursor=cursor)
                        tools += [
                            McpTool(self.name, tool.name, tool.description or "", dict(tool.input_schema or {}))
                            for tool in page.tools
                        ]
                        cursor = page.next_cursor
                        if cursor is None:
                            break
            except Exception as error:  # noqa: BLE001
                raise await self._request_error(_leaf(error), "list its tools", self.start_timeout_s) from None
            self._tools = tools
        return list(self._tools)

    async def call(self, tool: str, arguments: Mapping[str, Any] | None, timeout_s: float) -> ToolResult:
        client = await self.ensure_started()
        started = time.monotonic()
        try:
            # The SDK's read timeout cancels the request on the server; ours is the backstop.
            with anyio.fail_after(timeout_s + 1.0):
                result = await client.call_tool(tool, dict(arguments or {}), read_timeout_seconds=timeout_s)
        except Exception as error:  # noqa: BLE001
            raise await self._request_error(_leaf(error), f'run tool "{tool}"', timeout_s) from None
        return ToolResult(
            server=self.name,
            tool=tool,
            content=convert_content(result),
            is_error=bool(result.is_error),
            duration_s=time.monotonic() - started,
            structured=result.structured_content,
        )

    # -- messages -----------------------------------------------------------------------------

    def _with_stderr(self, message: str) -> str:
        last = self.stderr.last_line()
        return f"{message} Its last output: {last}" if last else message

    def _start_error(self, error: BaseException) -> McpServerError:
        name, config = self.name, self.config
        if isinstance(error, FileNotFoundError) and config.transport == STDIO:
            if config.cwd and not os.path.isdir(config.cwd):
                text = f'MCP server "{name}" could not start: its folder "{config.cwd}" does not exist.'
            else:
                text = f'MCP server "{name}" could not start: the command "{config.command}" was not found.'
        elif isinstance(error, PermissionError) and config.transport == STDIO:
            text = f'MCP server "{name}" could not start: "{config.command}" is not an executable program.'
        elif isinstance(error, MCPError) and error.code == mcp_types.CONNECTION_CLOSED:
            if config.transport == STDIO:
                text = f'MCP server "{name}" exited before it finished starting.'
            else:
                text = f'MCP server "{name}" at {config.url} closed the connection while starting.'
        elif type(error).__module__.startswith("httpx") and "Connect" in type(error).__name__:
            text = f'MCP server "{name}" could not be reached at {config.url} (is it running?).'
        elif type(error).__name__ == "HTTPStatusError":
            status = getattr(getattr(error, "response", None), "status_code", "an error")
            text = f'MCP server "{name}" at {config.url} answered HTTP {status}.'
        elif isinstance(error, MCPError):
            text = f'MCP server "{name}" could not start: {error.error.message}'
        elif isinstance(error, OSError):
            text = f'MCP server "{name}" could not start: {error.strerror or error}.'
        else:
            text = f'MCP server "{name}" could not start: {type(error).__name__}: {error}'
        return McpServerError(self._with_stderr(text), server=name, stderr=self.stderr.text())

    async def _request_error(self, error: BaseException, action: str, timeout_s: float) -> McpServerError:
        name = self.name
        code = error.error.code if isinstance(error, MCPError) else None
        if isinstance(error, TimeoutError) or code == mcp_types.REQUEST_TIMEOUT:
            return McpTimeoutError(
                f'MCP server "{name}" took longer than {timeout_s:g} s to {action}; the request was cancelled.',
                server=name,
                stderr=self.stderr.text(),
            )
        closed = (anyio.ClosedResourceError, anyio.BrokenResourceError)
        if code == mcp_types.CONNECTION_CLOSED or isinstance(error, closed):
            if self._stopping:
                return McpServerError(f'MCP server "{name}" was stopped while it was asked to {action}.', server=name)
            # The server is gone: tear the connection down so the next request starts it again.
            await self.stop()
            await self.stderr.settle()
            self.error = McpServerError(
                self._with_stderr(f'MCP server "{name}" stopped while it was asked to {action}.'),
                server=name,
                stderr=self.stderr.text(),
            )
            return self.error
        if isinstance(error, MCPError):
            return McpServerError(f'MCP server "{name}" could not {action}: {error.error.message}', server=name)
        if isinstance(error, ValidationError):
            return McpServerError(
                f'MCP server "{name}" answered a request to {action} with something that is not valid MCP.',
                server=name,
            )
        return McpServerError(f'MCP server "{name}" could not {action}: {type(error).__name__}: {error}', server=name)
