"""Our MLX ports of the Qwen3 architectures (one compact file per architecture)."""

from types import ModuleType

from mlx_backend.models import qwen3, qwen3_moe
from mlx_backend.models.rope import current_rope_scaling, set_rope_scaling

# config.json ``model_type`` -> the module holding its ModelArgs and Model.
ARCHITECTURES: dict[str, ModuleType] = {"qwen3": qwen3, "qwen3_moe": qwen3_moe}

__all__ = ["ARCHITECTURES", "current_rope_scaling", "qwen3", "qwen3_moe", "set_rope_scaling"]
