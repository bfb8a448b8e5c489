"""How the server listens and what it accepts (the app's Settings and ``qwen-desk serve`` flags)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Optional

from mlx_backend.errors import QwenDeskError

DEFAULT_HOST = "127.0.0.1"
# Not LM Studio's 1234, Ollama's 11434 nor mlx-lm's 8080: all three can run beside us.
DEFAULT_PORT = 8765
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
# Listening on these means every interface: reachable from other machines.
WILDCARD_HOSTS = ("0.0.0.0", "::", "")


class ServerSettingsError(QwenDeskError):
    """Settings the server refuses to start with (e.g. open to the network without a key)."""


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address, IPv6 with or without brackets) is this machine only."""
    host = host.strip().strip("[]").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


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
        return is_loopback(self.host)

    def check(self) -> "ServerSettings":
        """Refuse settings that would be unsafe or cannot work; returns self for chaining."""
        if not self.loopback_only and not self.api_key:
            where = "every network interface" if self.host.strip("[]") in WILDCARD_HOSTS else self.host
            raise ServerSettingsError(
                f"Listening on {where} lets other machines reach the server, so it needs an API key: "
                "pass --api-key KEY (or set QWEN_DESK_API_KEY), or listen on 127.0.0.1."
            )
        if not 0 <= self.port <= 65535:
            raise ServerSettingsError(f"Port {self.port} is not a valid port (0-65535).")
        if self.max_body_bytes <= 0 or self.max_queued < 0:
            raise ServerSettingsError("The body limit must be positive and the queue limit not negative.")
        for origin in self.cors_origins:
            if origin == "*" or "://" not in origin:
                raise ServerSettingsError(
                    f"CORS origin {origin!r} is not an origin: give each one in full, e.g. http://localhost:3000."
                )
        return self
