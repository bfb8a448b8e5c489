"""Pipeline stages: each rank holds only its run of layers, so no Mac needs the whole model.

The model is built and its weights opened lazily (MLX reads a tensor's bytes only when it is
evaluated); the stage split then drops the other ranks' layers and evaluating what is left reads
just this rank's layers from the safetensors shards, plus the embedding, final norm and head that
every rank keeps. The split is ``stages.stage_layers`` (what the planner sizes), in mlx-lm's
order: the highest rank holds the first layers, rank 0 the last ones and the finished output.

Our Qwen3 dense and MoE ports and mlx-lm's Qwen3.5/3.6/3.8 and Qwen3-Next models all carry
mlx-lm's ``PipelineMixin``; the forward pass sends and receives the hidden state itself.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Union

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_flatten

from mlx_backend.distributed.group import RankGroup
from mlx_backend.distributed.stages import stage_layers
from mlx_backend.errors import ModelLoadError
from mlx_backend.loading.loader import load_model


class PipelineError(ModelLoadError):
    """The model can't be split into this many stages."""


def decoder_stack(model: nn.Module) -> nn.Module:
    """The module that holds the decoder layers and splits into stages."""
    inner = getattr(model, "language_model", model)  # the 2026 family wraps the text model
    stack = getattr(inner, "model", None)
    if stack is None or not hasattr(stack, "pipeline"):
        raise PipelineError(f"{type(model).__name__} models can't be split into pipeline stages.")
    return stack


def split_into_stages(model: nn.Module, group: Union[RankGroup, mx.distributed.Group]) -> range:
    """Keep only this rank's layers of ``model``; returns their indices."""
    world = group.group if isinstance(group, RankGroup) else group
    if world is None or world.size() == 1:
        return range(len(decoder_stack(model).layers))
    stack = decoder_stack(model)
    size, rank = world.size(), world.rank()
    try:
        ranges = stage_layers(len(stack.layers), size)
    except ValueError as error:
        raise PipelineError(f"This model can't run on {size} Macs: {error}.") from None
    # PipelineMixin takes layer counts by rank, rank 0 holding the last stage.
    stack.pipeline(world, split=[len(ranges[size - 1 - r]) for r in range(size)])
    return ranges[size - 1 - rank]


def load_pipeline_stage(path: Union[str, Path], group: Union[RankGroup, mx.distributed.Group]) -> nn.Module:
    """Load ``path`` as this rank's pipeline stage, reading only the weights it keeps."""
    model = load_model(path, lazy=True)
    layers = split_into_stages(model, group)
    mx.eval(model.parameters())
    held = sum(v.nbytes for _, v in tree_flatten(model.parameters()))
    model.load_info = dataclasses.replace(model.load_info, weights_bytes=held)
    return model
