"""Load a Qwen checkpoint folder (Hugging Face or mlx-community layout) into an MLX model.

Every way a folder can be wrong (no config, unknown architecture, pickle-only, truncated or
missing shards, tensors that do not fit the config, a quantization config that disagrees with
the packed weights) ends in a ModelLoadError whose message says what is wrong in plain words.
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten
from mlx_lm.utils import get_total_parameters

from mlx_backend.hub.download import ProgressCallback, resolve_model_path
from mlx_backend.errors import ModelLoadError
from mlx_backend.models import ARCHITECTURES, Architecture
from mlx_backend.models.hybrid import check_layer_types, is_vision_weight
from mlx_backend.models.shape import HYBRID_MODEL_TYPES, ModelShape, text_config
from mlx_backend.loading.checkpoint_files import (
    index_weight_map,
    read_safetensors_header,
    weight_files,
)

# Quantization methods of other runtimes (AutoAWQ, GPTQ, bitsandbytes, fp8...): not MLX-packed.
_MLX_QUANT_MODES = {"affine", "mxfp4", "mxfp8", "nvfp4"}


@dataclass(frozen=True)
class LoadedModelInfo:
    """What the rest of the app wants to know about a loaded model without poking at it."""

    path: Path
    model_type: str
    config: dict[str, Any] = field(repr=False)
    num_parameters: int
    weights_bytes: int
    dtype: str  # float dtype of the weights ("bfloat16", "float32", ...)
    quantization: dict[str, Any] | None  # {"bits": 4, "group_size": 64, ...} or None
    context_length: int  # max_position_embeddings of the checkpoint's config

    @property
    def bits(self) -> int | None:
        return self.quantization["bits"] if self.quantization else None


def load(
    path_or_repo: str | Path,
    *,
    progress: ProgressCallback | None = None,
    cancel: threading.Event | None = None,
    stage_of: Any = None,
) -> tuple[nn.Module, Any]:
    """Resolve (downloading if needed) and load a model and its tokenizer.

    ``progress(done_bytes, total_bytes)`` reports download progress; it is not called for a
    local folder or a model already in the Hugging Face cache. ``stage_of``, a distributed
    group: load only this rank's pipeline stage (``mlx_backend.distributed.pipeline``).
    """
    from mlx_backend.text.tokenizer import Qwen3Tokenizer  # the tokenizer module is only needed here

    path = resolve_model_path(path_or_repo, progress=progress, cancel=cancel)
    if stage_of is not None:
        from mlx_backend.distributed.pipeline import load_pipeline_stage

        model = load_pipeline_stage(path, stage_of)
    else:
        model = load_model(path)
    tokenizer = Qwen3Tokenizer.from_folder(path)
    return model, tokenizer


def read_config(source: Mapping[str, Any] | str | os.PathLike) -> dict[str, Any]:
    """config.json as a dict, from a model folder, a config.json path or an in-memory config.

    The loader, the converter and the memory planner all read configs here, so a missing or
    unreadable config.json fails with the same clear ModelLoadError everywhere.
    """
    if isinstance(source, Mapping):
        return dict(source)
    path = Path(source).expanduser()
    folder, config_path = (path, path / "config.json") if path.is_dir() else (path.parent, path)
    if not config_path.is_file():
        raise ModelLoadError(
            f"The folder {folder} has no config.json, so it is not a model folder "
            "(expected config.json, model.safetensors and tokenizer files)."
        )
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ModelLoadError(f"config.json in {folder} could not be read: {error}") from None
    if not isinstance(config, dict):
        raise ModelLoadError(f"config.json in {folder} does not hold a JSON object.")
    return config


def architecture(config: dict[str, Any]) -> Architecture:
    """How to build the model of config.json's ``model_type``."""
    model_type = config.get("model_type")
    if model_type not in ARCHITECTURES:
        supported = ", ".join(sorted(ARCHITECTURES))
        found = f"'{model_type}'" if model_type else "no model_type"
        raise ModelLoadError(
            f"This model's config.json has {found}; Qwen Desk runs Qwen3, Qwen3-Next and "
            f"Qwen3.5 / 3.6 / 3.8 models (model_type {supported})."
        )
    return ARCHITECTURES[model_type]


def model_args(config: dict[str, Any]) -> Any:
    """Build the architecture's ModelArgs, turning config mistakes into a ModelLoadError."""
    module = architecture(config)
    try:
        if config.get("model_type") in HYBRID_MODEL_TYPES:
            check_layer_types(text_config(config))
        return module.ModelArgs.from_dict(config)
    except TypeError as error:
        if "missing" in str(error):
            # "... missing 1 required keyword-only argument: 'hidden_size'": name the field.
            missing = str(error).split(":")[-1].strip()
            raise ModelLoadError(f"config.json is missing required settings: {missing}.") from None
        raise ModelLoadError(f"config.json has settings of the wrong type: {error}.") from None
    except ValueError as error:
        raise ModelLoadError(f"config.json has invalid settings: {error}.") from None


def load_model(path: str | Path, *, lazy: bool = False) -> nn.Module:
    """Build the model described by ``path``/config.json and load its safetensors weights.

    The returned model carries ``model.load_info`` (a LoadedModelInfo). With ``lazy`` the
    weights are read from disk on first use instead of now.
    """
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ModelLoadError(f"The model folder {folder} does not exist.")
    if not any(folder.iterdir()):
        raise ModelLoadError(f"The model folder {folder} is empty.")

    config = read_config(folder)
    module = architecture(config)
    args = model_args(config)
    weights = _read_text_weights(folder)
    model = module.Model(args)
    try:
        weights = model.sanitize(weights)
    except ValueError as error:  # e.g. experts missing from a per-expert checkpoint
        raise ModelLoadError(f"The weights in {folder} are incomplete: {error}.") from None
    quantization = quantization_settings(config)
    if quantization is not None:
        quantize_like_checkpoint(model, weights, quantization)
    _check_tensors_fit(model, weights, folder)
    dtype = _dominant_float_dtype(weights)
    weights = _to_common_float_dtype(weights, dtype, getattr(model, "cast_predicate", None))

    model.load_weights(list(weights.items()), strict=True)
    if not lazy:
        mx.eval(model.parameters())
    model.eval()

    model.load_info = LoadedModelInfo(
        path=folder,
        model_type=args.model_type,
        config=config,
        num_parameters=get_total_parameters(model),
        weights_bytes=sum(v.nbytes for _, v in tree_flatten(model.parameters())),
        dtype=_dtype_name(dtype),
        quantization=_summary(quantization),
        context_length=ModelShape.from_config(config).max_position_embeddings,
    )
    return model


def _read_text_weights(folder: Path) -> dict[str, mx.array]:
    """Every tensor of the text model. A shard the index lists as vision-tower tensors only is
    not opened at all (nor is such an unindexed file read past its header), and mx.load is
    lazy, so the vision tensors of mixed files are dropped without their data being read."""
    weight_map = index_weight_map(folder) or {}
    shard_tensors: dict[str, list[str]] = {}
    for name, shard in weight_map.items():
        shard_tensors.setdefault(shard, []).append(name)
    weights: dict[str, mx.array] = {}
    for file in weight_files(folder):
        indexed = shard_tensors.get(file.name)
        if indexed and all(is_vision_weight(name) for name in indexed):
            continue
        header = read_safetensors_header(file)  # rejects truncated files before MLX touches them
        if header.tensors and all(is_vision_weight(name) for name in header.tensors):
            continue
        try:
            loaded = mx.load(str(file))
        except (RuntimeError, ValueError) as error:
            raise ModelLoadError(
                f"The weights file {file.name} could not be read: {error}"
            ) from None
        weights.update((k, v) for k, v in loaded.items() if not is_vision_weight(k))
    return weights


def quantization_settings(config: dict[str, Any]) -> dict[str, Any] | None:
    """The MLX quantization block of a config (mlx-lm writes ``quantization``), or None."""
    quantization = config.get("quantization") or config.get("quantization_config")
    if not quantization:
        return None
    method = quantization.get("quant_method")
    mode = quantization.get("mode", "affine")
    if method is not None or mode not in _MLX_QUANT_MODES:
        raise ModelLoadError(
            f"This model is quantized with {method or mode}, a format for other runtimes; "
            "Qwen Desk loads MLX quantized models (e.g. from mlx-community) or bf16 ones."
        )
    bits, group_size = quantization.get("bits"), quantization.get("group_size")
    if not isinstance(bits, int) or not isinstance(group_size, int):
        raise ModelLoadError(
            "config.json's quantization settings need integer 'bits' and 'group_size'."
        )
    return quantization


def quantize_like_checkpoint(
    model: nn.Module, weights: dict[str, mx.array], quantization: dict[str, Any]
) -> None:
    """Swap layers for quantized ones exactly where the checkpoint holds packed weights.

    Per-layer entries in the quantization block (``"model.layers.0.mlp.gate": {"bits": 8,
    ...}`` or ``false``) override the default, as in mlx-lm. Each layer's packed tensor is
    checked against its bits and group size so a wrong config fails with a clear message.
    """

    def predicate(path: str, module: nn.Module) -> bool | dict[str, Any]:
        params = layer_quantization(quantization, path)
        if params is True:
            if not (hasattr(module, "to_quantized") and f"{path}.scales" in weights):
                return False
            params = quantization_defaults(quantization)
        if params is False:
            return False
        _check_packing(path, module, params, weights)
        return params

    defaults = quantization_defaults(quantization)
    nn.quantize(model, **defaults, class_predicate=predicate)


def quantization_defaults(quantization: dict[str, Any]) -> dict[str, Any]:
    """The ``to_quantized`` settings of every layer without its own entry."""
    return {
        "group_size": quantization["group_size"],
        "bits": quantization["bits"],
        "mode": quantization.get("mode", "affine"),
    }


def layer_quantization(quantization: dict[str, Any], path: str) -> bool | dict[str, Any]:
    """config.json's word on the layer at ``path``: its own settings, False (left unquantized)
    or True (no entry: the defaults, where the layer is quantized at all)."""
    override = quantization.get(path)
    if isinstance(override, bool) and not override:
        return False
    if isinstance(override, dict):
        # Like mlx-lm, an override without "mode" is affine (to_quantized's default), not
        # the top-level mode: mxfp4 MoE folders keep their router as {"bits": 8, ...}.
        return {**quantization_defaults(quantization), "mode": "affine", **override}
    return True


def _check_packing(
    path: str, module: nn.Module, params: dict[str, Any], weights: dict[str, mx.array]
) -> None:
    packed, scales = weights.get(f"{path}.weight"), weights.get(f"{path}.scales")
    if packed is None or scales is None:
        return  # reported as missing tensors by _check_tensors_fit
    in_dims = module.weight.shape[-1]
    bits, group_size = params["bits"], params["group_size"]
    expected_packed = in_dims * bits // 32
    expected_groups = in_dims // group_size
    if packed.shape[-1] != expected_packed or scales.shape[-1] != expected_groups:
        actual_bits = packed.shape[-1] * 32 / in_dims
        actual_group = in_dims / scales.shape[-1] if scales.shape[-1] else 0
        raise ModelLoadError(
            f"config.json says {bits}-bit quantization with group size {group_size}, but the "
            f"weights of {path} are packed as {actual_bits:g}-bit with group size "
            f"{actual_group:g}. The config and the weights do not belong together."
        )


def _check_tensors_fit(model: nn.Module, weights: dict[str, mx.array], folder: Path) -> None:
    expected = dict(tree_flatten(model.parameters()))
    missing = sorted(expected.keys() - weights.keys())
    if missing:
        raise ModelLoadError(
            f"The weights in {folder} are missing {len(missing)} tensor(s) the model needs "
            f"(e.g. {missing[0]}). The files are incomplete or belong to a different model."
        )
    unexpected = sorted(weights.keys() - expected.keys())
    if unexpected:
        raise ModelLoadError(
            f"The weights in {folder} have {len(unexpected)} tensor(s) this model has no place "
            f"for (e.g. {unexpected[0]}). config.json does not describe these weights."
        )
    for name in sorted(expected):
        want, got = tuple(expected[name].shape), tuple(weights[name].shape)
        if want != got:
            raise ModelLoadError(
                f"Tensor {name} has shape {got} in the weights but config.json implies {want}. "
                "The config and the weights do not belong together."
            )


def _is_float(array: mx.array) -> bool:
    return mx.issubdtype(array.dtype, mx.floating)


def _dominant_float_dtype(weights: dict[str, mx.array]) -> mx.Dtype:
    bytes_by_dtype: dict[mx.Dtype, int] = {}
    for value in weights.values():
        if _is_float(value):
            bytes_by_dtype[value.dtype] = bytes_by_dtype.get(value.dtype, 0) + value.nbytes
    return max(bytes_by_dtype, key=bytes_by_dtype.__getitem__, default=mx.float32)


def _to_common_float_dtype(
    weights: dict[str, mx.array], dtype: mx.Dtype, cast_predicate: Any = None
) -> dict[str, mx.array]:
    """Run in the checkpoint's own dtype; a few stray fp32 norms would otherwise upcast every
    activation that touches them (bf16 stays bf16, fp32 test checkpoints stay fp32). Tensors
    the model's ``cast_predicate`` refuses (mlx-lm's hybrids: the fp32 ``A_log`` of the
    recurrent decay) stay as stored, as mlx-lm loads them."""
    may_cast = cast_predicate or (lambda _: True)
    return {
        k: v.astype(dtype) if _is_float(v) and v.dtype != dtype and may_cast(k) else v
        for k, v in weights.items()
    }


def _dtype_name(dtype: mx.Dtype) -> str:
    return str(dtype).removeprefix("mlx.core.")


def _summary(quantization: dict[str, Any] | None) -> dict[str, Any] | None:
    if quantization is None:
        return None
    return {k: quantization[k] for k in ("bits", "group_size", "mode") if k in quantization}

