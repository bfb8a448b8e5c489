"""How far a model can attend and how its KV cache can be stored: one home for these rules.

The engine enforces them, the summary planner plans with them and the memory planner sizes
caches with them, so a document plan never promises what the engine would refuse.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Optional

# KV-cache quantization groups (mlx-lm's default): head_dim must be a multiple of it.
KV_GROUP_SIZE = 64
# YaRN factors Qwen documents: 4 is its long-context setting; above 8 quality falls apart.
DEFAULT_YARN_FACTOR = 4.0
MAX_YARN_FACTOR = 8.0
# Qwen3 (hybrid) configs allow 40,960 positions, but the model card's native context, which
# YaRN's factor multiplies, is 32,768 (Qwen's own rope_scaling example uses exactly that).
QWEN3_NATIVE_CONTEXT = {40960: 32768}
# Qwen3-Next and Qwen3.5 / 3.6 cards: "262,144 natively and extensible up to 1,010,000 tokens"
# with rope_type yarn, factor 4.0, original_max_position_embeddings 262144.
HYBRID_NATIVE_CONTEXT = 262144
HYBRID_PUBLISHED_LIMIT = 1_010_000
# Architectures whose cards publish that recipe. Qwen3.8 shares model_type qwen3_5 and its
# config is identical to Qwen3.6's (only transformers_version differs), so no config can tell
# them apart: Qwen3.8 gets the Qwen3.5 / 3.6 recipe. We have not seen a Qwen3.8 card saying so;
# a Qwen3.8 config that writes its own rope_parameters would take precedence.
_HYBRID_RECIPE_TYPES = frozenset({"qwen3_5", "qwen3_5_moe", "qwen3_next"})


@dataclass(frozen=True)
class YarnRecipe:
    """What a model card publishes for YaRN: the factor and the window it multiplies."""

    factor: float
    original_context: int
    # The longest context the card quotes; None: original x factor, nothing more said.
    published_limit: Optional[int] = None
    in_config: bool = False  # the config itself switches YaRN on (always applied)

    def window(self, factor: Optional[float] = None) -> int:
        tokens = int(self.original_context * (self.factor if factor is None else factor))
        return min(tokens, self.published_limit) if self.published_limit else tokens


def yarn_scaling(rope_scaling: Optional[Mapping[str, Any]]) -> Optional[Mapping[str, Any]]:
    """The config's rope settings if they say YaRN with a factor, else None."""
    if not rope_scaling:
        return None
    kind = rope_scaling.get("rope_type") or rope_scaling.get("type")
    return rope_scaling if kind == "yarn" and rope_scaling.get("factor") else None


def yarn_recipe(
    model_type: Optional[str],
    thinking_mode: str,
    max_positions: int,
    rope_scaling: Optional[Mapping[str, Any]],
) -> Optional[YarnRecipe]:
    """The YaRN recipe for this model, or None where its card publishes none.

    A config that already says yarn is its own recipe. Otherwise: hybrid Qwen3 (thinking
    switch, model_type qwen3 / qwen3_moe or unknown) factor 4 over 32,768; Qwen3-2507
    (thinking "never"/"always") none; Qwen3-Next and Qwen3.5 / 3.6 / 3.8 factor 4 over 262,144.
    """
    configured = yarn_scaling(rope_scaling)
    if configured is not None:
        return YarnRecipe(
            factor=float(configured["factor"]),
            original_context=yarn_original_context(max_positions, configured),
            # The card's recipe written into the config: its quoted limit still holds.
            published_limit=HYBRID_PUBLISHED_LIMIT if model_type in _HYBRID_RECIPE_TYPES else None,
            in_config=True,
        )
    if model_type in _HYBRID_RECIPE_TYPES:
        original = min(int(max_positions), HYBRID_NATIVE_CONTEXT)
        return YarnRecipe(DEFAULT_YARN_FACTOR, original, HYBRID_PUBLISHED_LIMIT)
    if thinking_mode == "hybrid":
        return YarnRecipe(DEFAULT_YARN_FACTOR, yarn_original_context(max_positions, None))
    return None


def no_recipe_message(name: str) -> str:
    return (
        f"{name} has no published long-context (YaRN) recipe, so YaRN can't be turned on for it; "
        "start a new chat or shorten the messages or documents instead."
    )


def yarn_original_context(max_positions: int, rope_scaling: Optional[Mapping[str, Any]]) -> int:
    """The pre-training window that a YaRN factor multiplies."""
    if rope_scaling and rope_scaling.get("original_max_position_embeddings"):
        return int(rope_scaling["original_max_position_embeddings"])
    return QWEN3_NATIVE_CONTEXT.get(int(max_positions), int(max_positions))


def context_window(
    max_positions: int,
    rope_scaling: Optional[Mapping[str, Any]],
    yarn_factor: Optional[float] = None,
    recipe: Optional[YarnRecipe] = None,
) -> int:
    """Tokens a model attends over, from its config's values: by its own rope (which may
    already be YaRN), or with YaRN at ``yarn_factor`` (over ``recipe``'s window when given)."""
    if yarn_factor is None:
        if yarn_scaling(rope_scaling) is not None:
            yarn_factor = float(rope_scaling["factor"])  # type: ignore[index]
        else:
            return int(max_positions)
    if recipe is not None:
        return recipe.window(yarn_factor)
    return int(yarn_original_context(max_positions, rope_scaling) * yarn_factor)


def kv_quantizable(head_dim: int) -> bool:
    """Can this model's keys and values be quantized in KV_GROUP_SIZE groups?"""
    return head_dim % KV_GROUP_SIZE == 0
