"""Models that can be loaded now: complete HF-cache snapshots and checked local folders (no Qt)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class InstalledModel:
    """A model that can be loaded now: a complete HF-cache snapshot or a local folder."""

    key: str  # what to load: the repo id or the folder path
    title: str
    path: Path
    size_bytes: int
    source: str  # "cache" or "folder"


def installed_cache_models() -> list[InstalledModel]:
    """The complete models in the HF cache. Reads the disk: call it off the GUI thread."""
    from mlx_backend.hub.download import list_cached_models

    return [
        InstalledModel(model.repo_id, model.repo_id.split("/")[-1], model.path, model.size_bytes, "cache")
        for model in list_cached_models()
        if model.complete
    ]


def folder_size(path: Path) -> int:
    try:
        return sum(p.stat().st_size for p in path.glob("*.safetensors"))
    except OSError:
        return 0


def validate_model_folder(folder: Path) -> None:
    """Raise ModelLoadError with a plain sentence unless ``folder`` holds a Qwen3 checkpoint."""
    from mlx_backend.errors import ModelLoadError
    from mlx_backend.loading.loader import architecture, read_config

    architecture(read_config(folder))  # the loader's own words for an unknown model_type
    if not any(folder.glob("*.safetensors")):
        raise ModelLoadError(f"{folder} has no .safetensors weights.")
