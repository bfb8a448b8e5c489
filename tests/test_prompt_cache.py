"""The per-conversation prompt cache store: prefix matching, trimming, LRU by bytes.

End-to-end reuse through the engine (same tokens as a cold run) is in test_engine.py.
"""

from __future__ import annotations

import mlx.core as mx
import pytest
from mlx_lm.models.cache import KVCache, QuantizedKVCache

from mlx_backend.generation.prompt_cache import PromptCacheStore, common_prefix_length

LAYERS = 2


def filled_layers(n_tokens: int) -> list[KVCache]:
    """Layer caches that really hold ``n_tokens`` positions (1 head x 8 dims, float32)."""
    layers = []
    for _ in range(LAYERS):
        cache = KVCache()
        keys = mx.arange(n_tokens * 8, dtype=mx.float32).reshape(1, 1, n_tokens, 8)
        cache.update_and_fetch(keys, keys + 1)
        layers.append(cache)
    return layers


def fresh_layers() -> list[KVCache]:
    return [KVCache() for _ in range(LAYERS)]


def test_common_prefix_length():
    assert common_prefix_length([1, 2, 3], [1, 2, 4]) == 2
    assert common_prefix_length([1, 2], [1, 2, 3]) == 2
    assert common_prefix_length([], [1]) == 0
    assert common_prefix_length([5], [6]) == 0


def test_unknown_conversation_gets_a_fresh_cache():
    store = PromptCacheStore(byte_budget=10**9)
    checkout = store.checkout("chat", [1, 2, 3], fresh_layers)
    assert checkout.reused == 0
    assert all(layer.offset == 0 for layer in checkout.layers)


def test_follow_up_prompt_reuses_the_whole_cached_prefix():
    store = PromptCacheStore(byte_budget=10**9)
    store.put("chat", filled_layers(5), [1, 2, 3, 4, 5])
    checkout = store.checkout("chat", [1, 2, 3, 4, 5, 6, 7], fresh_layers)
    assert checkout.reused == 5
    assert [layer.offset for layer in checkout.layers] == [5, 5]


def test_diverging_history_is_trimmed_back_to_the_common_prefix():
    # What Qwen3's template does: the earlier answer is re-rendered without its <think> block.
    cached = [10, 11, 12, 90, 91, 92, 20, 21]  # ... <think> ... </think> answer
    prompt = [10, 11, 12, 20, 21, 30, 31]  # ... answer, new user turn
    store = PromptCacheStore(byte_budget=10**9)
    store.put("chat", filled_layers(len(cached)), cached)
    checkout = store.checkout("chat", prompt, fresh_layers)
    assert checkout.reused == 3
    assert [layer.offset for layer in checkout.layers] == [3, 3]
    # The kept positions are the original ones, untouched by the trim.
    kept_keys, _ = checkout.layers[0].keys_and_values()
    assert kept_keys.flatten().tolist() == list(range(3 * 8))


def test_an_identical_prompt_still_leaves_one_token_to_prefill():
    store = PromptCacheStore(byte_budget=10**9)
    store.put("chat", filled_layers(4), [1, 2, 3, 4])
    checkout = store.checkout("chat", [1, 2, 3, 4], fresh_layers)
    assert checkout.reused == 3
    assert checkout.layers[0].offset == 3


def test_nothing_in_common_starts_from_a_fresh_cache():
    store = PromptCacheStore(byte_budget=10**9)
    old = filled_layers(4)
    store.put("chat", old, [1, 2, 3, 4])
    checkout = store.checkout("chat", [9, 9], fresh_layers)
    assert checkout.reused == 0
    assert checkout.layers is not old and checkout.layers[0].offset == 0


def test_a_cache_built_under_other_settings_is_not_reused():
    store = PromptCacheStore(byte_budget=10**9)
    store.put("chat", filled_layers(4), [1, 2, 3, 4], signature=("kv", None))
    checkout = store.checkout("chat", [1, 2, 3, 4, 5], fresh_layers, signature=("kv", 8))
    assert checkout.reused == 0


def test_checkout_takes_the_entry_out_until_it_is_put_back():
    # A request that dies half way must not leave a cache whose contents disagree with its tokens.
    store = PromptCacheStore(byte_budget=10**9)
    store.put("chat", filled_layers(4), [1, 2, 3, 4])
    store.checkout("chat", [1, 2, 3, 4, 5], fresh_layers)
    assert "chat" not in store
    assert store.checkout("chat", [1, 2, 3, 4, 5], fresh_layers).reused == 0


def test_put_refuses_a_token_list_that_does_not_match_the_cache():
    store = PromptCacheStore(byte_budget=10**9)
    with pytest.raises(ValueError, match="holds 3 positions but 4 tokens"):
        store.put("chat", filled_layers(3), [1, 2, 3, 4])


def test_quantized_caches_are_trimmed_too():
    layers = []
    for _ in range(LAYERS):
        cache = QuantizedKVCache(group_size=32, bits=8)
        keys = mx.ones((1, 1, 6, 64))
        cache.update_and_fetch(keys, keys)
        layers.append(cache)
    store = PromptCacheStore(byte_budget=10**9)
    store.put("chat", layers, [1, 2, 3, 4, 5, 6])
    checkout = store.checkout("chat", [1, 2, 3, 7], fresh_layers)
    assert checkout.reused == 3 and [c.offset for c in checkout.layers] == [3, 3]


def test_lru_evicts_least_recently_used_conversations_beyond_the_byte_budget():
    one = sum(layer.nbytes for layer in filled_layers(4))
    store = PromptCacheStore(byte_budget=int(2.5 * one))
    store.put("a", filled_layers(4), [1, 2, 3, 4])
    store.put("b", filled_layers(4), [1, 2, 3, 4])
    # Using "a" again makes "b" the least recently used.
    checkout = store.checkout("a", [1, 2, 3, 4, 5], fresh_layers)
    store.put("a", checkout.layers, [1, 2, 3, 4])
    store.put("c", filled_layers(4), [1, 2, 3, 4])
    assert store.conversations() == ["a", "c"]
    assert store.nbytes <= store.byte_budget


def test_the_current_conversation_is_kept_even_alone_over_budget():
    store = PromptCacheStore(byte_budget=1)
    store.put("a", filled_layers(4), [1, 2, 3, 4])
    store.put("b", filled_layers(4), [1, 2, 3, 4])
    assert store.conversations() == ["b"]


def test_the_number_of_conversations_is_bounded_too():
    store = PromptCacheStore(byte_budget=10**12, max_conversations=2)
    for name in "abc":
        store.put(name, filled_layers(2), [1, 2])
    assert store.conversations() == ["b", "c"]
    store.discard("b")
    assert store.conversations() == ["c"]
    store.clear()
    assert len(store) == 0
