"""Our MLX ports of the Qwen3 architectures (one compact file per architecture)."""
