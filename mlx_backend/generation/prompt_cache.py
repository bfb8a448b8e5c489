"""Per-conversation KV caches so a follow-up turn only prefills what is new.

Each conversation keeps the mlx-lm KV cache of its last turn together with the exact token ids
that cache holds. The next turn's prompt is rendered from scratch and compared token by token:
the cache is trimmed back to the longest common prefix and only the rest is prefilled.

The common prefix is usually shorter than "everything before the new message": Qwen3's chat
template drops the ``<think>`` block of earlier assistant turns from the history, so the
re-rendered previous answer differs from what the model generated right after
``<|im_start|>assistant``. Comparing tokens (instead of assuming the old prompt is a prefix of
the new one) makes reuse exact in every case: whatever matches is reused, whatever differs is
recomputed, and the result is the same as a cold run. (The engine also re-encodes each reply
the way the next prompt renders it right after the reply, so in a normal chat the next turn's
prompt extends the cache exactly; see ``Engine._reencode_reply`` in engine.py.)

Several conversations keep their caches in a small LRU bounded by bytes, so switching back to
a recent chat is fast too. The engine checks a cache out for the length of one request and
puts it back afterwards with the tokens it then holds (or drops it when a request failed).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, Hashable, Optional, Sequence

from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

LayerCaches = list[Any]  # one mlx-lm cache object per layer (KVCache, QuantizedKVCache, ...)


@dataclass
class CachedPrompt:
    """A KV cache and the token ids it holds, position by position."""

    layers: LayerCaches
    tokens: list[int]
    # Settings the cached keys/values were computed under; a request with others can't reuse it.
    signature: Hashable = None

    @property
    def nbytes(self) -> int:
        return sum(layer.nbytes for layer in self.layers)

    def offset(self) -> int:
        """How many positions the layer caches actually hold (must equal ``len(tokens)``)."""
        return self.layers[0].offset if self.layers else 0


@dataclass
class CacheCheckout:
    """What the engine prefills with: a cache holding ``prompt[:reused]``."""

    layers: LayerCaches
    reused: int


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class PromptCacheStore:
    """An LRU of per-conversation caches under a byte budget.

    The most recently used conversation is kept even when it alone exceeds the budget: its
    cache lived in memory during the turn anyway and is what the next turn needs.
    """

    def __init__(self, byte_budget: int, max_conversations: int = 8):
        if byte_budget < 0 or max_conversations < 1:
            raise ValueError("byte_budget must be >= 0 and max_conversations >= 1")
        self.byte_budget = byte_budget
        self.max_conversations = max_conversations
        self._entries: OrderedDict[str, CachedPrompt] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def __contains__(self, conversation_id: object) -> bool:
        return conversation_id in self._entries

    @property
    def nbytes(self) -> int:
        return sum(entry.nbytes for entry in self._entries.values())

    def conversations(self) -> list[str]:
        """Conversation ids from least to most recently used."""
        return list(self._entries)

    def peek(self, conversation_id: str) -> Optional[CachedPrompt]:
        """The conversation's entry without touching its LRU position (None if not cached)."""
        return self._entries.get(conversation_id)

    def tokens_of(self, conversation_id: str) -> Optional[list[int]]:
        entry = self._entries.get(conversation_id)
        return list(entry.tokens) if entry else None

    def checkout(
        self,
        conversation_id: Optional[str],
        prompt: Sequence[int],
        make_layers: Callable[[], LayerCaches],
        signature: Hashable = None,
    ) -> CacheCheckout:
        """Take the conversation's cache out of the store, trimmed to fit ``prompt``.

        The entry leaves the store until ``put`` returns it, so a request that fails half way
        can never leave a cache whose contents disagree with its token list.
        """
        if not prompt:
            raise ValueError("the prompt must hold at least one token")
        entry = self._entries.pop(conversation_id, None) if conversation_id else None
        if entry is None or entry.signature != signature or entry.offset() != len(entry.tokens):
            return CacheCheckout(make_layers(), 0)
        # Always leave at least one token to prefill: the last one produces the first logits.
        keep = min(common_prefix_length(entry.tokens, prompt), len(prompt) - 1)
        surplus = len(entry.tokens) - keep
        if surplus and not can_trim_prompt_cache(entry.layers):
            return CacheCheckout(make_layers(), 0)
        if surplus:
            trim_prompt_cache(entry.layers, surplus)
        if keep == 0:
            # Nothing in common: a fresh cache starts at offset 0 just the same, without the
            # old buffers' size.
            return CacheCheckout(make_layers(), 0)
        return CacheCheckout(entry.layers, keep)

    def put(
        self,
        conversation_id: str,
        layers: LayerCaches,
        tokens: Sequence[int],
        signature: Hashable = None,
    ) -> None:
        """Store the cache as the conversation's most recent, then evict to the budget."""
        entry = CachedPrompt(list(layers), list(tokens), signature)
        if entry.offset() != len(entry.tokens):
            raise ValueError(
                f"cache holds {entry.offset()} positions but {len(entry.tokens)} tokens were given"
            )
        self._entries.pop(conversation_id, None)
        self._entries[conversation_id] = entry
        self._evict()

    def discard(self, conversation_id: str) -> None:
        self._entries.pop(conversation_id, None)

    def clear(self) -> None:
        self._entries.clear()

    def _evict(self) -> None:
        while len(self._entries) > self.max_conversations:
            self._entries.popitem(last=False)
        total = self.nbytes
        while len(self._entries) > 1 and total > self.byte_budget:
            _, evicted = self._entries.popitem(last=False)
            total -= evicted.nbytes
