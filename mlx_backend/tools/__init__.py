"""Tool use: finding a model's tool calls in its answer (shared by the app and the server)."""
