"""The Qwen architectures we run: our Qwen3 ports and mlx-lm's hybrid models, extended."""

from typing import Any, NamedTuple

from mlx_backend.models import qwen3, qwen3_5, qwen3_moe, qwen3_next
from mlx_backend.models.rope import current_rope_scaling, set_rope_scaling


class Architecture(NamedTuple):
    ModelArgs: Any  # has from_dict(config) -> args
    Model: Any  # Model(args) -> nn.Module following mlx-lm's model protocol


# config.json ``model_type`` -> how to build it.
ARCHITECTURES: dict[str, Architecture] = {
    "qwen3": Architecture(qwen3.ModelArgs, qwen3.Model),
    "qwen3_moe": Architecture(qwen3_moe.ModelArgs, qwen3_moe.Model),
    "qwen3_5": Architecture(qwen3_5.ModelArgs, qwen3_5.Model),
    "qwen3_5_moe": Architecture(qwen3_5.ModelArgs, qwen3_5.MoeModel),
    "qwen3_next": Architecture(qwen3_next.ModelArgs, qwen3_next.Model),
}

__all__ = ["ARCHITECTURES", "Architecture", "current_rope_scaling", "set_rope_scaling"]
