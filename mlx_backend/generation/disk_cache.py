"""Prompt caches that survive a restart: each conversation's cache written to disk.

After an answer the engine hands the conversation's cache (``CachedPrompt``: the layers, the
tokens they hold, the hybrid models' snapshots) to ``DiskPromptCache.save``. The arrays are
copied out on the caller's thread - MLX's in-place cache updates rebind the live arrays, so the
next turn can't change what is being written - and the file is written by a background thread
while the user reads the answer. When a conversation the engine has not seen since it started
comes back, ``load`` restores it from its file instead of prefilling it again.

A file is a safetensors archive (arrays only: nothing in it is executed) whose metadata names
the format, the model identity (weights, template, mlx-lm version: a cache from another model or
version must never be used) and every layer's kind and offset. Anything that does not match -
corrupt, truncated, foreign, another layer layout, shapes the model doesn't have - is deleted
and treated as absent: a cold prefill gives the same answer, only slower.

The folder is kept under a byte budget, least recently used files first (loading a file
touches it).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Hashable, Optional

import mlx.core as mx
from mlx_lm.models.cache import KVCache, QuantizedKVCache

from mlx_backend.generation.prompt_cache import CachedPrompt, LayerCaches
from mlx_backend.models.linear_state import LinearStateCache, LinearStateSnapshot
from mlx_backend.models.shape import ModelShape

log = logging.getLogger(__name__)

FORMAT = "qwen-desk-prompt-cache/1"
DEFAULT_DISK_BUDGET_BYTES = 8 * 2**30
SUFFIX = ".safetensors"


def model_identity(*parts: Any) -> str:
    """A stable digest of what cached keys and values depend on (model files, template, ...)."""
    digest = hashlib.sha256(FORMAT.encode())
    for part in parts:
        digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        digest.update(b"\x00")
    return digest.hexdigest()[:32]


class DiskPromptCache:
    """One model's cache files under ``folder`` (shared by every model, budgeted together)."""

    def __init__(self, folder: str | Path, identity: str, shape: ModelShape, byte_budget: int = DEFAULT_DISK_BUDGET_BYTES):
        self.folder = Path(folder)
        self.identity = identity
        self.byte_budget = byte_budget
        self._shape = shape
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prompt-cache-writer")
        self._pending: dict[str, Future] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ paths

    def path_for(self, conversation_id: str) -> Path:
        # Hashed: a conversation id is whatever the caller chose, not a file name.
        name = hashlib.sha256(f"{self.identity}\x00{conversation_id}".encode()).hexdigest()[:40]
        return self.folder / f"{name}{SUFFIX}"

    def files(self) -> list[Path]:
        try:
            return [p for p in self.folder.iterdir() if p.suffix == SUFFIX and p.is_file()]
        except OSError:
            return []

    @property
    def nbytes(self) -> int:
        """Bytes the cache folder takes on disk (every model's files)."""
        total = 0
        for path in self.files():
            try:
                total += path.stat().st_size
            except OSError:
                pass
        return total

    # ------------------------------------------------------------------ writing

    def save(self, conversation_id: str, entry: CachedPrompt, signature: Hashable) -> Future:
        """Write ``entry`` in the background; returns the write's future (tests, shutdown)."""
        arrays, metadata = self._serialize(conversation_id, entry, signature)
        mx.eval(list(arrays.values()))  # the copies exist before the next turn changes anything
        path = self.path_for(conversation_id)
        with self._lock:
            future = self._writer.submit(self._write, path, arrays, metadata)
            self._pending[conversation_id] = future
        return future

    def flush(self, timeout: Optional[float] = None) -> None:
        """Wait for the writes scheduled so far."""
        with self._lock:
            pending = list(self._pending.values())
        for future in pending:
            try:
                future.result(timeout)
            except Exception:  # noqa: BLE001 - a failed write was logged; the cache is optional
                pass

    def close(self) -> None:
        self.flush()
        self._writer.shutdown(wait=True)

    def _serialize(self, conversation_id: str, entry: CachedPrompt, signature: Hashable) -> tuple[dict[str, mx.array], dict[str, str]]:
        arrays: dict[str, mx.array] = {"tokens": mx.array(entry.tokens, dtype=mx.int32)}
        layers = []
        for i, layer in enumerate(entry.layers):
            kind, parts, extra = _layer_state(layer)
            layers.append({"kind": kind, "offset": int(layer.offset), "parts": len(parts), **extra})
            for j, part in enumerate(parts):
                arrays[f"layer.{i}.{j}"] = mx.contiguous(part)
        snapshots = {}
        for position, snapshot in entry.snapshots.items():
            linear = {}
            for i, state in enumerate(snapshot):
                if state is None:
                    continue
                present = [j for j, a in enumerate(state.arrays) if a is not None]
                linear[str(i)] = {"offset": state.offset, "present": present, "slots": len(state.arrays)}
                for j in present:
                    arrays[f"snapshot.{position}.{i}.{j}"] = mx.contiguous(state.arrays[j])
            snapshots[str(position)] = linear
        metadata = {
            "format": FORMAT,
            "identity": self.identity,
            "conversation": conversation_id,
            "signature": repr(signature),
            "layers": json.dumps(layers),
            "snapshots": json.dumps(snapshots),
        }
        return arrays, metadata

    def _write(self, path: Path, arrays: dict[str, mx.array], metadata: dict[str, str]) -> None:
        size = sum(a.nbytes for a in arrays.values())
        if size > self.byte_budget:
            path.unlink(missing_ok=True)  # too big to keep: an older, smaller copy would mislead
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            # mx.save_safetensors adds the suffix itself: the temporary name must keep it last.
            temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp{SUFFIX}")
            mx.save_safetensors(str(temporary), arrays, metadata)
            os.replace(temporary, path)  # a crash mid-write leaves the old file or none
        except Exception:  # noqa: BLE001 - disk full, permissions: the answer is already shown
            log.warning("could not write the prompt cache %s", path, exc_info=True)
            return
        self._evict(keep=path)

    def _evict(self, keep: Path) -> None:
        def last_used(p: Path) -> float:
            try:
                return p.stat().st_mtime
            except OSError:
                return 0.0

        files = sorted(self.files(), key=last_used)
        total = self.nbytes
        for path in files:
            if total <= self.byte_budget:
                break
            if path == keep:
                continue
            try:
                size = path.stat().st_size
                path.unlink()
                total -= size
            except OSError:
                pass

    # ------------------------------------------------------------------ reading

    def load(self, conversation_id: str, signature: Hashable) -> Optional[CachedPrompt]:
        """The conversation's cache from disk, or None. A file that fails any check is deleted."""
        with self._lock:
            pending = self._pending.pop(conversation_id, None)
        if pending is not None:
            pending.exception()  # a write still running finishes first
        path = self.path_for(conversation_id)
        if not path.is_file():
            return None
        try:
            arrays, metadata = mx.load(str(path), return_metadata=True)
            if metadata.get("format") != FORMAT or metadata.get("identity") != self.identity:
                raise ValueError("another model, template or format")
            if metadata.get("conversation") != conversation_id:
                raise ValueError("another conversation")
            if metadata.get("signature") != repr(signature):
                return None  # another KV setting or rope: valid, just not for this request
            entry = self._restore(arrays, metadata, signature)
        except Exception as error:  # noqa: BLE001 - never trust a cache file that doesn't check out
            log.info("dropping prompt cache %s: %s", path.name, error)
            path.unlink(missing_ok=True)
            return None
        try:
            os.utime(path)  # most recently used
        except OSError:  # evicted by the writer just now: the arrays are loaded already
            pass
        return entry

    def discard(self, conversation_id: str) -> None:
        self.flush()
        self.path_for(conversation_id).unlink(missing_ok=True)

    def clear(self) -> None:
        """Delete every cache file in the folder (every model's): Settings > Clear."""
        self.flush()
        for path in self.files():
            path.unlink(missing_ok=True)

    def _restore(self, arrays: dict[str, mx.array], metadata: dict[str, str], signature: Hashable) -> CachedPrompt:
        tokens = arrays["tokens"].tolist()
        specs = json.loads(metadata["layers"])
        if len(specs) != self._shape.num_layers:
            raise ValueError("layer count differs")
        layers: LayerCaches = []
        for i, spec in enumerate(specs):
            if spec["offset"] != len(tokens):
                raise ValueError(f"layer {i} holds {spec['offset']} positions, not {len(tokens)}")
            parts = [arrays[f"layer.{i}.{j}"] for j in range(spec["parts"])]
            layers.append(self._layer_from_state(i, spec, parts))
        snapshots = {}
        for position, linear in json.loads(metadata["snapshots"]).items():
            states: list[Any] = [None] * len(layers)
            for index, info in linear.items():
                i = int(index)
                if not isinstance(layers[i], LinearStateCache):
                    raise ValueError("snapshot of a layer that has no state")
                slots: list[Optional[mx.array]] = [None] * info["slots"]
                for j in info["present"]:
                    slots[j] = arrays[f"snapshot.{position}.{i}.{j}"]
                self._check_linear(i, slots)
                states[i] = LinearStateSnapshot(int(info["offset"]), tuple(slots))
            snapshots[int(position)] = tuple(states)
        if any(not 0 < p <= len(tokens) for p in snapshots):
            raise ValueError("a snapshot lies outside the cached tokens")
        return CachedPrompt(layers, tokens, signature, snapshots)

    def _layer_from_state(self, i: int, spec: dict[str, Any], parts: list[mx.array]) -> Any:
        shape = self._shape
        kind, offset = spec["kind"], spec["offset"]
        expected_kind = "LinearStateCache" if i not in shape.attention_layers else None
        if kind == "LinearStateCache":
            if expected_kind != "LinearStateCache":
                raise ValueError(f"layer {i} is an attention layer")
            slots: list[Optional[mx.array]] = [None] * spec["slots"]
            for j, part in zip(spec["present"], parts):
                slots[j] = part
            self._check_linear(i, slots)
            layer = LinearStateCache(spec["slots"])
            layer.cache = slots
            layer.offset = offset
            return layer
        if expected_kind is not None:
            raise ValueError(f"layer {i} is a linear-attention layer")
        heads_and_length = (1, shape.num_kv_heads, offset)
        if any(tuple(p.shape[:3]) != heads_and_length for p in parts):
            raise ValueError(f"layer {i} has the wrong shape")
        if kind == "KVCache" and len(parts) == 2:
            if any(p.shape[3] != shape.head_dim for p in parts):
                raise ValueError(f"layer {i} has the wrong head size")
            layer = KVCache()
            layer.keys, layer.values, layer.offset = parts[0], parts[1], offset
            return layer
        if kind == "QuantizedKVCache" and len(parts) == 6:
            layer = QuantizedKVCache(group_size=int(spec["group_size"]), bits=int(spec["bits"]))
            layer.keys, layer.values = tuple(parts[:3]), tuple(parts[3:])
            layer.offset = offset
            return layer
        raise ValueError(f"layer {i}: unknown cache kind {kind!r}")

    def _check_linear(self, i: int, slots: list[Optional[mx.array]]) -> None:
        linear = self._shape.linear
        if linear is None:
            raise ValueError("this model has no linear-attention layers")
        expected = ((linear.conv_kernel - 1) * linear.conv_dim, linear.value_heads * linear.value_head_dim * linear.key_head_dim)
        for slot, size in zip(slots, expected):
            if slot is not None and slot.size != size:
                raise ValueError(f"layer {i}'s state has the wrong size")


def _layer_state(layer: Any) -> tuple[str, list[mx.array], dict[str, Any]]:
    """A layer cache as (kind, arrays up to its offset, extra facts)."""
    offset = layer.offset
    if isinstance(layer, LinearStateCache):
        present = [j for j, a in enumerate(layer.cache) if a is not None]
        return "LinearStateCache", [layer.cache[j] for j in present], {"present": present, "slots": len(layer.cache)}
    if isinstance(layer, QuantizedKVCache):
        parts = [a[..., :offset, :] for a in (*layer.keys, *layer.values)]
        return "QuantizedKVCache", parts, {"group_size": layer.group_size, "bits": layer.bits}
    if isinstance(layer, KVCache):
        return "KVCache", [layer.keys[..., :offset, :], layer.values[..., :offset, :]], {}
    raise TypeError(f"cannot save a {type(layer).__name__}")
