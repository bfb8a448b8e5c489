"""How the server listens and what it accepts (the app's Settings and ``qwen-desk serve`` flags)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

DEFAULT_HOST = "127.0.0.1"
# Not LM Studio's 1234, Ollama's 11434 nor mlx-lm's 8080: all three can run beside us.
DEFAULT_PORT = 8765
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class ServerSettings:
    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    # Required (and checked) whenever ``host`` is not loopback; optional on loopback.
    api_key: Optional[str] = None
    # Host names (besides loopback and the listening address) a request may name in its Host
    # header: without the check a web page could reach the server through a DNS-rebound name.
    allowed_hosts: tuple[str, ...] = ()
    # Origins allowed to call from a browser (CORS); none unless the user lists them.
    cors_origins: tuple[str, ...] = ()
    max_body_bytes: int = 32 * 2**20
    # The most answer tokens one request may ask for.
    max_tokens_limit: int = 32_768
    # Requests waiting behind the running one before new ones get 429.
    max_queued: int = 16
    # Shown in /v1/models next to the real name: lets clients that hard-code a model id work.
    model_aliases: tuple[str, ...] = field(default_factory=tuple)

    @property
    def loopback_only(self) -> bool:
        return self.host in LOOPBACK_HOSTS
