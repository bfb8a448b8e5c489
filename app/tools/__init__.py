"""Tools (MCP) in the app: the hub's lifetime, the approval dialog, the tool turn's job and its
transcript blocks. The loop itself is ``mlx_backend.tools.loop``; servers are ``mlx_backend.tools.mcp``."""
