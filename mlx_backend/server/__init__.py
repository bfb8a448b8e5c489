"""The local server: OpenAI- and Anthropic-compatible HTTP over the loaded model.

``create_app(backend, settings)`` builds the ASGI app (Starlette, served by uvicorn). The server
never runs MLX itself: it hands ``ChatRequest``s to a ``GenerationBackend`` (``backend.py``) -
the headless ``EngineBackend`` for ``qwen-desk serve``, or the app's worker when the window
serves the model it has loaded - and streams the events back in each protocol's shape.
"""
