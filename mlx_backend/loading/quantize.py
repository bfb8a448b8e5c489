"""Quantize a bf16/fp32 Qwen checkpoint into an MLX folder (the mlx-community layout).

The output is what ``mlx_lm.convert -q`` writes: a config with a ``quantization`` block
({group_size, bits} plus per-layer overrides such as the MoE router kept at 8 bits), packed
safetensors and the tokenizer files, so both Qwen Desk and mlx-lm load it. For the hybrid
architectures the text model is written (the vision tower of a multimodal folder is not).
"""

from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

import mlx.core as mx
from mlx.utils import tree_flatten, tree_unflatten
from mlx_lm.utils import quantize_model, save_model

from mlx_backend.hub.download import resolve_model_path
from mlx_backend.errors import QwenDeskError
from mlx_backend.loading.loader import load_model, quantization_settings, read_config

SUPPORTED_BITS = (2, 3, 4, 5, 6, 8)
SUPPORTED_GROUP_SIZES = (32, 64, 128)
DTYPES = {"bfloat16": mx.bfloat16, "float16": mx.float16, "float32": mx.float32}
# Everything but weights: tokenizer files, chat templates, generation config.
_COPIED_PATTERNS = ("*.json", "*.txt", "*.jinja")
_NOT_COPIED = {"config.json", "model.safetensors.index.json"}


class ConversionError(QwenDeskError):
    """A conversion could not start or finish (bad settings, destination in the way)."""


def convert(
    src: str | Path,
    dst: str | Path,
    *,
    bits: int,
    group_size: int = 64,
    dtype: str | None = None,
) -> Path:
    """Quantize the model at ``src`` (folder or repo id) to ``bits`` and write it to ``dst``.

    ``dtype`` ("bfloat16", "float16", "float32") sets the dtype of what stays unpacked
    (scales, norms); by default the source's dtype is kept. The folder appears at ``dst`` only
    once complete: it is written beside it and renamed into place.
    """
    if bits not in SUPPORTED_BITS:
        raise ConversionError(f"Cannot quantize to {bits} bits; choose one of {SUPPORTED_BITS}.")
    if group_size not in SUPPORTED_GROUP_SIZES:
        raise ConversionError(
            f"Group size {group_size} is not supported; choose one of {SUPPORTED_GROUP_SIZES}."
        )
    if dtype is not None and dtype not in DTYPES:
        raise ConversionError(f"Unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}.")
    dst = Path(dst).expanduser()
    if dst.exists() and (not dst.is_dir() or any(dst.iterdir())):
        raise ConversionError(f"{dst} already exists and is not empty; choose a new folder.")

    src_path = resolve_model_path(src)
    config = read_config(src_path)
    if quantization_settings(config) is not None:
        raise ConversionError(
            f"The model in {src_path} is already quantized; convert from its bf16 release."
        )

    model = load_model(src_path, lazy=True)
    if dtype is not None:
        _cast(model, DTYPES[dtype])
    # mlx-lm's own choices (the model's quant_predicate, e.g. the MoE router at 8 bits; layers
    # the group size does not divide stay unquantized), so both loaders rebuild these shapes.
    # It also prints the resulting bits per weight, as `mlx_lm.convert` does.
    model, out_config = quantize_model(model, config, group_size=group_size, bits=bits)
    # A config mlx-lm's ModelArgs can read (Qwen3-Next: rope keys out of rope_parameters).
    out_config = getattr(model, "config_for_mlx_lm", lambda c: c)(out_config)
    if dtype is not None:
        out_config["torch_dtype"] = dtype

    dst.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dst.name}.partial-", dir=dst.parent))
    try:
        save_model(staging, model, donate_model=True)
        (staging / "config.json").write_text(json.dumps(out_config, indent=2), encoding="utf-8")
        _copy_side_files(src_path, staging)
        if dst.exists():
            dst.rmdir()  # empty, checked above
        staging.rename(dst)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return dst


def _cast(model, dtype: mx.Dtype) -> None:
    """Cast the float parameters as mlx_lm.convert does: those the model's cast_predicate
    refuses (the hybrids' fp32 A_log) stay as they are."""
    may_cast = getattr(model, "cast_predicate", None) or (lambda _: True)
    model.update(
        tree_unflatten(
            [
                (k, v.astype(dtype))
                for k, v in tree_flatten(model.parameters())
                if mx.issubdtype(v.dtype, mx.floating) and may_cast(k)
            ]
        )
    )


def _copy_side_files(src: Path, dst: Path) -> None:
    for pattern in _COPIED_PATTERNS:
        for file in src.glob(pattern):
            if file.name not in _NOT_COPIED and file.is_file():
                shutil.copy2(file, dst / file.name)
