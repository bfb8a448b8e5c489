"""Per-conversation caches so a follow-up turn only prefills what is new.

Each conversation keeps the mlx-lm cache of its last turn together with the exact token ids
that cache holds. The next turn's prompt is rendered from scratch and compared token by token:
the cache is brought back to the longest common prefix and only the rest is prefilled.

The common prefix is usually shorter than "everything before the new message": Qwen3's chat
template drops the ``<think>`` block of earlier assistant turns from the history, so the
re-rendered previous answer differs from what the model generated right after
``<|im_start|>assistant``. Comparing tokens (instead of assuming the old prompt is a prefix of
the new one) makes reuse exact in every case: whatever matches is reused, whatever differs is
recomputed, and the result is the same as a cold run. (The engine also re-encodes each reply
the way the next prompt renders it right after the reply, so in a normal chat the next turn's
prompt extends the cache exactly; see ``Engine._reencode_reply`` in engine.py.)

Going back is easy for a KV cache (trim it) but impossible for the recurrent state of a hybrid
model's linear-attention layers (Qwen3.5, Qwen3-Next), which folds every token in. For those the
engine takes snapshots of the linear layers' state at turn boundaries (``take_snapshot``; the
arrays are references, MLX never mutates them), kept with the entry by position. ``rewind``
then goes back to the longest snapshot inside the common prefix: attention layers are trimmed
to it, linear layers restored. Where the cached tokens are a prefix of the new prompt, the live
state is used as is. Snapshots count toward the byte budget (arrays shared with the live state
or another snapshot counted once).

Several conversations keep their caches in a small LRU bounded by bytes, so switching back to
a recent chat is fast too. The engine checks a cache out for the length of one request and
puts it back afterwards with the tokens it then holds (or drops it when a request failed).
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any, Callable, Hashable, Iterable, Optional, Sequence

from mlx_lm.models.cache import can_trim_prompt_cache, trim_prompt_cache

LayerCaches = list[Any]  # one mlx-lm cache object per layer (KVCache, QuantizedKVCache, ...)
# The state of every layer at one position: a LinearStateSnapshot for a linear-attention layer,
# None for a trimmable (attention) layer, which is trimmed instead.
Snapshot = tuple[Any, ...]
Snapshots = dict[int, Snapshot]  # position (tokens held) -> the state there


def is_restorable(layers: LayerCaches) -> bool:
    """A cache that can't be trimmed but can go back through snapshots (a hybrid model's)."""
    return (
        not can_trim_prompt_cache(layers)
        and any(hasattr(layer, "snapshot") for layer in layers)
        and all(hasattr(layer, "snapshot") or layer.is_trimmable() for layer in layers)
    )


def take_snapshot(layers: LayerCaches) -> Snapshot:
    return tuple(layer.snapshot() if hasattr(layer, "snapshot") else None for layer in layers)


def rewind(layers: LayerCaches, held: int, snapshots: Snapshots, target: int) -> Optional[int]:
    """Bring ``layers`` (holding ``held`` positions) back to at most ``target`` positions.

    Returns the position they now hold: ``target`` for a trimmable cache, the longest snapshot
    at or before it for a hybrid one (whose later snapshots are dropped, their tokens are about
    to be replaced). None when neither is possible; the layers are then untouched.
    """
    if target >= held:
        return held
    if can_trim_prompt_cache(layers):
        trim_prompt_cache(layers, held - target)
        return target
    usable = [position for position in snapshots if position <= target]
    if not usable or not is_restorable(layers):
        return None
    position = max(usable)
    for layer, state in zip(layers, snapshots[position]):
        if state is None:
            layer.trim(layer.offset - position)
        else:
            layer.restore(state)
    for later in [p for p in snapshots if p > position]:
        del snapshots[later]
    return position


@dataclass
class CachedPrompt:
    """A layer cache, the token ids it holds position by position, and its snapshots."""

    layers: LayerCaches
    tokens: list[int]
    # Settings the cached keys/values were computed under; a request with others can't reuse it.
    signature: Hashable = None
    snapshots: Snapshots = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        # A snapshot taken where nothing has run since shares its arrays with the live state
        # (or with another snapshot): every array is counted once.
        seen: set[int] = set()
        total = 0

        def count(arrays: Iterable[Any]) -> None:
            nonlocal total
            for array in arrays:
                if id(array) not in seen:
                    seen.add(id(array))
                    total += array.nbytes

        for layer in self.layers:
            if hasattr(layer, "snapshot"):
                count(a for a in layer.cache if a is not None)
            else:
                total += layer.nbytes
        for snapshot in self.snapshots.values():
            for state in snapshot:
                if state is not None:
                    count(a for a in state.arrays if a is not None)
        return total

    def offset(self) -> int:
        """How many positions the layer caches actually hold (must equal ``len(tokens)``)."""
        return self.layers[0].offset if self.layers else 0


@dataclass
class CacheCheckout:
    """What the engine prefills with: a cache holding ``prompt[:reused]``, and its snapshots."""

    layers: LayerCaches
    reused: int
    snapshots: Snapshots = field(default_factory=dict)


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


class PromptCacheStore:
    """An LRU of per-conversation caches under a byte budget.

    The most recently used conversation is kept even when it alone exceeds the budget: its
    cache lived in memory during the turn anyway and is what the next turn needs. Over the
    budget, older conversations go first; if the current one alone is still over, its oldest
    snapshots go next.
    Each entry keeps at most ``max_snapshots`` snapshots, the latest positions (the turns a
    user is likeliest to edit or regenerate).
    """

    def __init__(self, byte_budget: int, max_conversations: int = 8, max_snapshots: int = 8):
        if byte_budget < 0 or max_conversations < 1 or max_snapshots < 0:
            raise ValueError("byte_budget and max_snapshots must be >= 0 and max_conversations >= 1")
        self.byte_budget = byte_budget
        self.max_conversations = max_conversations
        self.max_snapshots = max_snapshots
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
        """Take the conversation's cache out of the store, brought back to fit ``prompt``.

        A trimmable cache is trimmed to the common prefix; a hybrid one resumes from its live
        state when its tokens are a prefix of ``prompt``, else from the longest snapshot inside
        the common prefix. The entry leaves the store until ``put`` returns it, so a request
        that fails half way can never leave a cache whose contents disagree with its token list.
        """
        if not prompt:
            raise ValueError("the prompt must hold at least one token")
        entry = self._entries.pop(conversation_id, None) if conversation_id else None
        if entry is None or entry.signature != signature or entry.offset() != len(entry.tokens):
            return CacheCheckout(make_layers(), 0)
        # Always leave at least one token to prefill: the last one produces the first logits.
        keep = min(common_prefix_length(entry.tokens, prompt), len(prompt) - 1)
        keep = rewind(entry.layers, len(entry.tokens), entry.snapshots, keep)
        if not keep:
            # Nothing in common (or nothing to go back to): a fresh cache starts at offset 0
            # just the same, without the old buffers' size.
            return CacheCheckout(make_layers(), 0)
        return CacheCheckout(entry.layers, keep, entry.snapshots)

    def put(
        self,
        conversation_id: str,
        layers: LayerCaches,
        tokens: Sequence[int],
        signature: Hashable = None,
        snapshots: Optional[Snapshots] = None,
    ) -> None:
        """Store the cache as the conversation's most recent, then evict to the budget."""
        entry = CachedPrompt(list(layers), list(tokens), signature, dict(snapshots or {}))
        if entry.offset() != len(entry.tokens):
            raise ValueError(
                f"cache holds {entry.offset()} positions but {len(entry.tokens)} tokens were given"
            )
        if any(not 0 < position <= len(entry.tokens) for position in entry.snapshots):
            raise ValueError("a snapshot lies outside the tokens the cache holds")
        for position in sorted(entry.snapshots)[: max(0, len(entry.snapshots) - self.max_snapshots)]:
            del entry.snapshots[position]
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
        if total > self.byte_budget and self._entries:
            current = next(reversed(self._entries.values()))
            while current.snapshots and current.nbytes > self.byte_budget:
                del current.snapshots[min(current.snapshots)]
