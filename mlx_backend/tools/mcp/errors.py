"""MCP errors: each message is complete and plain, so the CLI and the app show it as is."""

from __future__ import annotations

from pathlib import Path

from mlx_backend.errors import QwenDeskError


class McpError(QwenDeskError):
    """Something went wrong with an MCP server or its configuration.

    ``server`` names the server when one is involved; ``stderr`` is the tail of what a local
    server wrote to its stderr (often the real reason it failed), empty when there is none.
    """

    def __init__(self, message: str, *, server: str | None = None, stderr: str = "") -> None:
        super().__init__(message)
        self.server = server
        self.stderr = stderr


class McpConfigError(McpError):
    """The MCP configuration file cannot be used; names the file, the line and the problem."""

    def __init__(
        self,
        problem: str,
        *,
        path: Path | None = None,
        line: int | None = None,
        column: int | None = None,
        server: str | None = None,
    ) -> None:
        where = str(path) if path else "MCP configuration"
        if line is not None:
            where += f", line {line}" + (f", column {column}" if column is not None else "")
        super().__init__(f"{where}: {problem}", server=server)
        self.path, self.line, self.column, self.problem = path, line, column, problem


class McpServerError(McpError):
    """A server could not start, stopped, or answered a request with an error."""


class McpTimeoutError(McpServerError):
    """A server did not answer within the time allowed."""
