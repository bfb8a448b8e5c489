"""Qwen3 inference on MLX: model port, loading, tokenizer, generation engine.

This package never imports Qt; the desktop app in ``app/`` drives it from a worker thread.
"""
