"""Running one model on several processes or Macs with MLX's distributed engine (mx.distributed)."""
