"""The speculative-decoding line of an answer's stats, in words (no Qt).

From ``GenerationStats`` as stored with the message (``dataclasses.asdict``): nothing when no
drafting happened, else how much of the drafting was kept and what it gained.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

KIND_WORDS = {
    "draft-model": "Draft model",
    "mtp": "MTP",
    "prompt-lookup": "Quote-aware drafting",
}


def speculative_words(stats: Optional[Mapping[str, Any]]) -> str:
    """E.g. "Draft model: 71% accepted, 1.6x faster"; "" for plain decoding."""
    kind = (stats or {}).get("speculative")
    if not kind:
        return ""
    label = KIND_WORDS.get(str(kind), str(kind))
    if stats.get("speculative_fell_back"):
        return f"{label}: slower here, switched off for this answer"
    drafted = int(stats.get("drafted_tokens") or 0)
    if drafted <= 0:
        return ""
    accepted = int(stats.get("accepted_tokens") or 0)
    words = f"{label}: {accepted / drafted:.0%} accepted"
    speedup = stats.get("speculative_speedup")
    if speedup:
        words += f", {speedup:.1f}x faster" if speedup >= 1.05 else (
            ", no faster" if speedup >= 0.95 else f", {speedup:.1f}x speed")
    return words
