"""Speed-up per model: a draft model, the built-in MTP heads, or neither; and quote drafting.

No Qt here. The Models window offers the choices (``speed_up_row.py``); the window turns the
stored choice into what the worker loads (``load_options``). Which models may draft for which
is decided cheaply from the files on disk (same tokenizer files, fewer parameters); the engine
checks the tokenizer again when it loads the pair and refuses a mismatch in plain words.
"""

from __future__ import annotations

import hashlib
import json
import struct
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Literal, Optional

from app.models.installed import TOKENIZER_FILES, InstalledModel, model_facts

Mode = Literal["off", "mtp", "draft"]
MODES: tuple[str, ...] = ("off", "mtp", "draft")


@dataclass(frozen=True)
class SpeedUp:
    """One model's choice, as stored in the settings."""

    mode: Mode = "off"
    draft: str = ""  # the draft model's key (repo id or folder), with mode "draft"
    # Prompt lookup ("Quote-aware drafting for documents"): on by default, it only drafts for
    # long prompts and switches itself off where it doesn't pay.
    quote_lookup: bool = True

    @property
    def prompt_lookup(self) -> str:
        """``ChatRequest.prompt_lookup`` for this model's answers."""
        return "auto" if self.quote_lookup else "off"

    def to_json(self) -> dict:
        return {"mode": self.mode, "draft": self.draft, "quote_lookup": self.quote_lookup}

    @classmethod
    def from_json(cls, data: object) -> "SpeedUp":
        if not isinstance(data, dict):
            return cls()
        mode = data.get("mode") if data.get("mode") in MODES else "off"
        draft = str(data.get("draft") or "")
        if mode == "draft" and not draft:
            mode = "off"
        return cls(mode, draft if mode == "draft" else "", bool(data.get("quote_lookup", True)))  # type: ignore[arg-type]


@dataclass(frozen=True)
class LoadOptions:
    """What the worker loads beside the model; falsy when nothing (plain decoding)."""

    draft: str = ""  # the draft model's key: a folder, or a repo id in the Hugging Face cache
    draft_name: str = ""  # for messages
    mtp: bool = False

    def __bool__(self) -> bool:
        return bool(self.draft or self.mtp)

    def what(self) -> str:
        return f"The draft model {self.draft_name}" if self.draft else "The built-in MTP heads"


def engine_has_mtp(info: object) -> bool:
    """Does the loaded engine offer MTP drafting? (``EngineInfo.has_mtp``; older engines lack it.)"""
    return bool(getattr(info, "has_mtp", False))


def load_options(choice: SpeedUp) -> LoadOptions:
    """What the worker loads beside the model for ``choice``."""
    if choice.mode == "mtp":
        return LoadOptions(mtp=True)
    if choice.mode == "draft":
        return LoadOptions(draft=choice.draft, draft_name=key_name(choice.draft))
    return LoadOptions()


def key_name(key: str) -> str:
    """"mlx-community/Qwen3-0.6B-4bit" -> "Qwen3-0.6B-4bit"; a folder -> its name."""
    return key.rstrip("/\\").replace("\\", "/").rsplit("/", 1)[-1]


def local_model_folder(key: str) -> Optional[Path]:
    """``key``'s folder on this Mac without downloading anything (None: not here, or incomplete).
    Reads the disk: call it on the worker thread."""
    folder = Path(key).expanduser()
    if folder.is_dir():
        return folder
    from mlx_backend.hub.download import _complete_cached_snapshot, is_repo_id

    return _complete_cached_snapshot(key) if is_repo_id(key) else None


# ------------------------------------------------------------ from the files on disk
def draft_candidates(target: InstalledModel, installed: list[InstalledModel]) -> list[InstalledModel]:
    """Installed models that can draft for ``target``: the same tokenizer files and fewer
    parameters (Qwen3-0.6B / 1.7B for a larger Qwen3; Qwen3.5-0.8B / 2B for that family),
    smallest first."""
    fingerprint = tokenizer_fingerprint(target.path)
    size = _parameters(target)
    if fingerprint is None or size is None:
        return []
    candidates = [
        m for m in installed
        if m.key != target.key and tokenizer_fingerprint(m.path) == fingerprint
        and (_parameters(m) or size) < size
    ]
    return sorted(candidates, key=lambda m: _parameters(m) or 0)


def tokenizer_fingerprint(folder: Path) -> Optional[str]:
    """A hash of the tokenizer files: equal means the same ids for the same text."""
    for names in TOKENIZER_FILES:
        files = [folder / name for name in names]
        if all(f.is_file() for f in files):
            try:
                stats = tuple((str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files)
            except OSError:
                return None
            return _hash_files(stats)
    return None


@lru_cache(maxsize=256)
def _hash_files(stats: tuple[tuple[str, int, int], ...]) -> Optional[str]:
    digest = hashlib.sha256()
    try:
        for name, _size, _mtime in stats:
            with open(name, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
    except OSError:
        return None
    return digest.hexdigest()


def _parameters(model: InstalledModel) -> Optional[int]:
    facts = model_facts(model.path)
    if facts is not None and facts.parameters:
        return facts.parameters
    return model.size_bytes or None


def has_mtp_weights(folder: Path) -> bool:
    """Does this checkpoint ship multi-token-prediction heads (config and weights, e.g. Qwen3.5;
    many conversions drop the weights)? Reads config.json and the weights' headers only."""
    try:
        config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    layers = text.get("mtp_num_hidden_layers") or text.get("num_nextn_predict_layers") or 0
    if not isinstance(layers, int) or layers <= 0:
        return False
    return any(_is_mtp(name) for name in _weight_names(folder))


def _is_mtp(name: str) -> bool:
    return name.startswith("mtp.") or ".mtp." in name


def _weight_names(folder: Path) -> list[str]:
    index = folder / "model.safetensors.index.json"
    if index.is_file():
        try:
            return list(json.loads(index.read_text(encoding="utf-8")).get("weight_map", {}))
        except (OSError, ValueError, AttributeError):
            return []
    names: list[str] = []
    for file in sorted(folder.glob("*.safetensors")):
        try:
            with open(file, "rb") as handle:
                (length,) = struct.unpack("<Q", handle.read(8))
                if length > 100 * 2**20:  # not a safetensors header
                    continue
                names.extend(k for k in json.loads(handle.read(length)) if k != "__metadata__")
        except (OSError, ValueError, struct.error):
            continue
    return names
