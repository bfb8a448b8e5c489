"""Models that can be loaded now: complete HF-cache snapshots and checked local folders (no Qt)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

# Any one of these is enough for the Qwen3 tokenizer loader (tokenizer.json, or the BPE pair).
TOKENIZER_FILES = (("tokenizer.json",), ("vocab.json", "merges.txt"))


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
    """Raise ModelLoadError with a plain sentence unless ``folder`` holds a loadable Qwen checkpoint:
    a config.json with a supported model_type, tokenizer files and .safetensors weights."""
    from mlx_backend.errors import ModelLoadError
    from mlx_backend.loading.loader import architecture, read_config

    if not folder.is_dir():
        raise ModelLoadError(f"{folder} is not a folder (or no longer exists).")
    architecture(read_config(folder))  # the loader's own words for a missing config or unknown model_type
    if not any(all((folder / name).is_file() for name in names) for names in TOKENIZER_FILES):
        raise ModelLoadError(
            f"{folder.name} has no tokenizer (tokenizer.json, or vocab.json and merges.txt), so it "
            "can't be loaded. Copy the tokenizer files from the model's release into the folder."
        )
    if not any(folder.glob("*.safetensors")):
        raise ModelLoadError(f"{folder.name} has no .safetensors weights, so it can't be loaded.")


def find_model_folder(folder: Path) -> Path:
    """The model folder the user meant: ``folder`` itself, or the one model folder inside it.

    Raises ModelLoadError in plain words when neither holds a usable model."""
    from mlx_backend.errors import ModelLoadError

    folder = folder.expanduser()
    if not folder.is_dir():
        raise ModelLoadError(f"{folder} is not a folder (or no longer exists).")
    if (folder / "config.json").is_file():
        validate_model_folder(folder)
        return folder
    try:
        children = sorted(p for p in folder.iterdir() if p.is_dir() and (p / "config.json").is_file())
    except OSError as error:
        raise ModelLoadError(f"{folder} could not be read: {error.strerror or error}") from None
    if len(children) == 1:
        validate_model_folder(children[0])
        return children[0]
    if children:
        names = ", ".join(child.name for child in children[:4])
        raise ModelLoadError(f"{folder.name} holds several model folders ({names}). Choose one of them.")
    raise ModelLoadError(
        f"{folder.name} is not a model folder: it has no config.json. Choose the folder that holds "
        "config.json, the .safetensors weights and the tokenizer files."
    )


@dataclass(frozen=True)
class ModelFacts:
    """What config.json says about a model, for the Models window's detail line."""

    model_type: str
    parameters: Optional[int]  # all parameters (every expert); None if it could not be measured
    bits: Optional[int]  # quantization bits; None: not quantized
    dtype: str
    context_length: Optional[int]

    def words(self) -> str:
        parts = [self.model_type]
        if self.parameters:
            parts.append(f"{parameter_words(self.parameters)} parameters")
        parts.append(f"{self.bits}-bit" if self.bits else self.dtype)
        if self.context_length:
            parts.append(f"{self.context_length // 1024}K context")
        return ", ".join(parts)


def parameter_words(count: int) -> str:
    if count >= 1e9:
        return f"{count / 1e9:.1f}B".replace(".0B", "B")
    if count >= 1e6:
        return f"{count / 1e6:.0f}M"
    return f"{count / 1e3:.0f}K"  # test-sized models


def model_facts(config_source) -> Optional[ModelFacts]:
    """Facts from a config.json (folder, file or dict); None when it can't be read."""
    from mlx_backend.errors import QwenDeskError
    from mlx_backend.loading.loader import quantization_settings, read_config

    try:
        config = read_config(config_source)
    except QwenDeskError:
        return None
    text = config.get("text_config") if isinstance(config.get("text_config"), dict) else config
    try:
        from mlx_backend.memory.sizes import count_parameters

        parameters: Optional[int] = count_parameters(config)
    except Exception:  # noqa: BLE001 - an odd config still gets its other facts shown
        parameters = None
    try:
        quantization = quantization_settings(config)
    except Exception:  # noqa: BLE001
        quantization = None
    context = text.get("max_position_embeddings") or config.get("max_position_embeddings")
    dtype = str(config.get("torch_dtype") or config.get("dtype") or text.get("dtype") or "bfloat16")
    return ModelFacts(
        model_type=str(config.get("model_type") or "unknown"),
        parameters=parameters,
        bits=int(quantization["bits"]) if quantization else None,
        dtype=dtype.replace("torch.", ""),
        context_length=int(context) if context else None,
    )
