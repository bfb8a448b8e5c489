"""Which engine prompt cache a client's request should use.

Chat APIs are stateless: an agent resends the whole, growing conversation each time. The
engine reuses a cache by ``conversation_id`` and then by the longest common token prefix, so
the server only has to pick the right id. A client may name its conversation
(``prompt_cache_key``, ``user``, Anthropic's ``metadata.user_id``); otherwise the request's
messages are matched, by hash, against the conversations this server has answered: the longest
earlier prefix that was a request (or a request plus our reply) picks the id.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import threading
import uuid
from collections import OrderedDict
from typing import Iterable, Optional, Sequence

from mlx_backend.events import ChatMessage

# Remembered prefixes (a few per conversation); the engine itself keeps only a few caches.
MAX_REMEMBERED = 256


def _message_key(message: ChatMessage) -> bytes:
    calls = [[c.name, c.arguments] for c in message.tool_calls]
    return json.dumps([message.role, message.content, calls], sort_keys=True, ensure_ascii=False).encode()


def prefix_hashes(messages: Iterable[ChatMessage], *, salt: str = "") -> list[str]:
    """``result[i]`` identifies ``messages[: i + 1]`` (and the salt: tools, model settings)."""
    digest = hashlib.sha256(salt.encode())
    hashes = []
    for message in messages:
        digest.update(_message_key(message))
        digest.update(b"\x00")
        hashes.append(digest.copy().hexdigest())
    return hashes


class ConversationKeys:
    """Thread-safe map from message prefixes to the conversation ids the engine caches under."""

    def __init__(self, max_remembered: int = MAX_REMEMBERED) -> None:
        self._ids: "OrderedDict[str, str]" = OrderedDict()
        self._max = max_remembered
        self._lock = threading.Lock()
        self._counter = itertools.count(1)
        # Unique per process: the app's disk prompt cache outlives a restart, and a new
        # conversation must not be handed the previous run's "server:1".
        self._prefix = f"server-{uuid.uuid4().hex[:8]}"

    def conversation_for(self, messages: Sequence[ChatMessage], *, client_key: Optional[str] = None, salt: str = "") -> str:
        """The id to run ``messages`` under; a new one when nothing earlier matches."""
        if client_key:
            return f"client:{client_key}"
        hashes = prefix_hashes(messages, salt=salt)
        with self._lock:
            # The whole request first (a retry or regenerate), then ever shorter prefixes.
            for digest in reversed(hashes):
                if digest in self._ids:
                    self._ids.move_to_end(digest)
                    return self._ids[digest]
            return f"{self._prefix}:{next(self._counter)}"

    def remember(self, conversation_id: str, messages: Sequence[ChatMessage], reply: Optional[ChatMessage] = None, *, salt: str = "") -> None:
        """After answering: the request, and the request with our reply, lead to this id."""
        if conversation_id.startswith("client:"):
            return
        hashes = prefix_hashes([*messages, *([reply] if reply else [])], salt=salt)
        keep = hashes[-2:] if reply else hashes[-1:]
        with self._lock:
            for digest in keep:
                self._ids[digest] = conversation_id
                self._ids.move_to_end(digest)
            while len(self._ids) > self._max:
                self._ids.popitem(last=False)
