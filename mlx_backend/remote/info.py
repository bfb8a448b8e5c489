"""What the app shows about a remote model: EngineInfo's fields, from the server's /v1/models."""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Mapping, Optional

GB = 1e9


@dataclass(frozen=True)
class RemoteModelInfo:
    """The fields of ``EngineInfo`` the app reads, plus where the model runs."""

    name: str
    model_type: str = ""
    context_length: int = 0
    yarn_context_length: Optional[int] = None
    thinking_mode: str = "hybrid"
    weights_bytes: int = 0
    num_layers: int = 0
    quantization_bits: Optional[int] = None
    path: None = None  # no folder on this Mac
    reasoning_efforts: tuple[str, ...] = ()
    can_preserve_thinking: bool = False
    preserves_thinking_by_default: bool = False
    thinks_by_default: bool = True
    # Not in EngineInfo: the model answers from a server, not from this process.
    remote: bool = True
    # Words for where it runs, e.g. "2 Macs" ("" for a plain server).
    where: str = ""

    @property
    def weights_gb(self) -> float:
        return self.weights_bytes / GB

    @classmethod
    def from_models_entry(cls, entry: Mapping[str, Any], *, where: str = "") -> "RemoteModelInfo":
        """One ``/v1/models`` entry; our server's ``qwen_desk`` facts where it sends them."""
        facts = dict(entry.get("qwen_desk") or {})
        known = {f.name for f in fields(cls)} - {"name", "path", "remote", "where"}
        values = {k: v for k, v in facts.items() if k in known and v is not None}
        if "reasoning_efforts" in values:
            values["reasoning_efforts"] = tuple(values["reasoning_efforts"])
        if "context_length" not in values and isinstance(entry.get("max_model_len"), int):
            values["context_length"] = entry["max_model_len"]
        return cls(name=str(entry.get("id", "")), where=where, **values)
