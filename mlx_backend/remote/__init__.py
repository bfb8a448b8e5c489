"""Chat with a model served elsewhere over our OpenAI-compatible HTTP server.

``RemoteEngine`` is an engine as the app's worker sees one (``info``, ``stream``), backed by a
``qwen-desk serve`` (one process, or an mlx.launch group across several Macs) instead of a model
in this process. ``ServerProcess`` starts such a server as a child process and watches it. No
MLX and no Qt here.
"""

from mlx_backend.remote.engine import RemoteEngine, RemoteError
from mlx_backend.remote.info import RemoteModelInfo
from mlx_backend.remote.process import ServerProcess

__all__ = ["RemoteEngine", "RemoteError", "RemoteModelInfo", "ServerProcess"]
