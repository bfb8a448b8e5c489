"""Finding and checking the files of a checkpoint folder before anything is loaded.

Reading safetensors headers (a few KB each) lets us reject truncated downloads, missing shards
and pickle-only folders with a clear message up front, instead of a crash deep inside MLX when
a lazily loaded tensor is finally read.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

from mlx_backend.errors import ModelLoadError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
# Formats we refuse: they are pickles, which can run code when opened.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_MAX_HEADER_BYTES = 100 * 1024 * 1024


@dataclass(frozen=True)
class TensorInfo:
    dtype: str  # safetensors spelling: F32, BF16, U32, ...
    shape: tuple[int, ...]


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    tensors: dict[str, TensorInfo]
    expected_size: int  # bytes the file must have for every tensor to be readable


def read_safetensors_header(path: Path) -> SafetensorsHeader:
    """Parse a safetensors header and check the file holds all the data it announces."""
    try:
        size = path.stat().st_size
        with path.open("rb") as f:
            prefix = f.read(8)
            if len(prefix) < 8:
                raise ModelLoadError(f"The weights file {path.name} is empty or truncated.")
            (header_len,) = struct.unpack("<Q", prefix)
            if header_len > min(_MAX_HEADER_BYTES, size - 8):
                raise ModelLoadError(
                    f"The weights file {path.name} is truncated or is not a safetensors file."
                )
            header = json.loads(f.read(header_len))
    except OSError as error:
        raise ModelLoadError(f"Could not read the weights file {path}: {error.strerror}.") from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ModelLoadError(
            f"The weights file {path.name} is not a valid safetensors file."
        ) from None

    tensors: dict[str, TensorInfo] = {}
    data_end = 0
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            tensors[name] = TensorInfo(info["dtype"], tuple(int(d) for d in info["shape"]))
            data_end = max(data_end, int(info["data_offsets"][1]))
        except (KeyError, TypeError, ValueError, IndexError):
            raise ModelLoadError(
                f"The weights file {path.name} has a malformed entry for tensor {name!r}."
            ) from None
    expected = 8 + header_len + data_end
    if size < expected:
        raise ModelLoadError(
            f"The weights file {path.name} is truncated ({size:,} of {expected:,} bytes); "
            "the download may have been interrupted. Download the model again."
        )
    return SafetensorsHeader(path, tensors, expected)


def index_weight_map(folder: Path) -> dict[str, str] | None:
    """The index's tensor name -> shard file name, or None for a folder without an index."""
    index = folder / INDEX_FILE
    if not index.is_file():
        return None
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        if not all(isinstance(v, str) for v in weight_map.values()):
            raise TypeError
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, AttributeError, TypeError):
        raise ModelLoadError(f"{INDEX_FILE} in {folder} is not a valid index file.") from None
    return dict(weight_map)


def weight_files(folder: Path) -> list[Path]:
    """The safetensors files of a checkpoint folder, every shard of its index present."""
    weight_map = index_weight_map(folder)
    if weight_map is not None:
        shard_names = sorted(set(weight_map.values()))
        missing = [name for name in shard_names if not (folder / name).is_file()]
        if missing:
            raise ModelLoadError(
                f"The model in {folder} is incomplete: {len(missing)} of {len(shard_names)} "
                f"weight shards are missing ({', '.join(missing[:3])}"
                f"{', ...' if len(missing) > 3 else ''})."
            )
        return [folder / name for name in shard_names]

    if (folder / SINGLE_FILE).is_file():
        return [folder / SINGLE_FILE]
    shards = sorted(folder.glob("model*.safetensors"))
    if shards:
        return shards

    if any(p.suffix in PICKLE_SUFFIXES for p in folder.iterdir()):
        raise ModelLoadError(
            f"The model in {folder} only has PyTorch pickle weights (.bin); Qwen Desk loads "
            "safetensors only, because pickle files can run code. Use a safetensors release."
        )
    raise ModelLoadError(f"The model folder {folder} has no weights (model.safetensors).")


def incomplete_reason(folder: Path) -> str | None:
    """Why a folder is not a complete checkpoint, or None when it is."""
    if not (folder / "config.json").is_file():
        return "config.json is missing"
    try:
        for path in weight_files(folder):
            read_safetensors_header(path)
    except ModelLoadError as error:
        return str(error)
    return None
