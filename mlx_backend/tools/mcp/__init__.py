"""MCP client: configured servers (config.py) behind one synchronous hub (hub.py).

No Qt here; the app's tool loop and ``qwen-desk mcp`` both use this package.
"""

from mlx_backend.tools.mcp.config import (
    ImportReport,
    McpConfig,
    ServerConfig,
    claude_desktop_config_path,
    default_config_path,
    import_claude_desktop,
    load_config,
    parse_config,
    save_config,
)
from mlx_backend.tools.mcp.errors import McpConfigError, McpError, McpServerError, McpTimeoutError
from mlx_backend.tools.mcp.hub import McpHub, ServerStatus
from mlx_backend.tools.mcp.results import ImagePart, McpTool, TextPart, ToolResult
from mlx_backend.tools.mcp.schema import ToolNames, openai_tools

__all__ = [
    "ImagePart",
    "ImportReport",
    "McpConfig",
    "McpConfigError",
    "McpError",
    "McpHub",
    "McpServerError",
    "McpTimeoutError",
    "McpTool",
    "ServerConfig",
    "ServerStatus",
    "TextPart",
    "ToolNames",
    "ToolResult",
    "claude_desktop_config_path",
    "default_config_path",
    "import_claude_desktop",
    "load_config",
    "openai_tools",
    "parse_config",
    "save_config",
]
