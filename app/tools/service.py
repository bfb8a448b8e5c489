"""The app's one MCP hub: created on first use (on the worker thread, never the GUI's), closed
at quit in bounded time. The config file is read again whenever it changed on disk."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Optional

from mlx_backend.tools.mcp import McpConfig, McpConfigError, McpHub, default_config_path, load_config
from mlx_backend.tools.mcp.hub import DEFAULT_CALL_TIMEOUT_S, DEFAULT_START_TIMEOUT_S


class ToolService:
    def __init__(self, config_path: Optional[Path] = None, *, call_timeout_s: float = DEFAULT_CALL_TIMEOUT_S,
                 start_timeout_s: float = DEFAULT_START_TIMEOUT_S) -> None:
        self.config_path = Path(config_path) if config_path else default_config_path()
        self.call_timeout_s = call_timeout_s
        self.start_timeout_s = start_timeout_s
        self._lock = threading.Lock()
        self._hub: Optional[McpHub] = None
        self._hub_stamp: Optional[tuple[float, int]] = None
        self._closed = False

    def _stamp(self) -> Optional[tuple[float, int]]:
        try:
            info = self.config_path.stat()
        except OSError:
            return None
        return (info.st_mtime, info.st_size)

    def config(self) -> McpConfig:
        """The servers configured now (raises McpConfigError for a broken file)."""
        return load_config(self.config_path)

    def has_servers(self) -> bool:
        try:
            return bool(self.config().enabled())
        except McpConfigError:
            return False

    def config_error(self) -> str:
        """What is wrong with mcp.json ("" when it reads, or is absent)."""
        try:
            self.config()
        except McpConfigError as error:
            return str(error)
        return ""

    def hub(self) -> McpHub:
        """The hub for the current config; a changed file replaces it (its servers stop)."""
        with self._lock:
            if self._closed:
                raise McpConfigError("The app is quitting.")
            stamp = self._stamp()
            if self._hub is None or stamp != self._hub_stamp:
                old, self._hub = self._hub, McpHub(self.config(), start_timeout_s=self.start_timeout_s)
                self._hub_stamp = stamp
                if old is not None:
                    old.close()
            return self._hub

    def current_hub(self) -> Optional[McpHub]:
        """The hub if one was started (Settings shows its servers' state), without starting one."""
        return self._hub

    def close(self) -> None:
        with self._lock:
            self._closed = True
            hub, self._hub = self._hub, None
        if hub is not None:
            hub.close()
