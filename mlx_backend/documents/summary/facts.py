"""What the planner is given: the model's facts, its context window and the user's options."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

from mlx_backend.documents.summary.protocols import SummaryEngine
from mlx_backend.models.limits import DEFAULT_YARN_FACTOR, context_window, yarn_recipe
from mlx_backend.models.rope import normalize_rope_scaling
from mlx_backend.models.shape import configured_rope, max_positions, text_config


@dataclass(frozen=True)
class ModelFacts:
    """What the planner needs to know about a model, without touching its weights."""

    name: str
    config: Mapping[str, Any] = field(repr=False)
    # "hybrid" (Qwen3: YaRN may be switched on per request), "always"/"never" (2507 models).
    thinking_mode: str

    @classmethod
    def from_engine(cls, engine: SummaryEngine) -> "ModelFacts":
        info = engine.info
        # The checkpoint's config.json (quantization included) when the model was loaded from
        # a folder; a bare model's arguments otherwise.
        load_info = getattr(engine.model, "load_info", None)
        config = dict(load_info.config) if load_info is not None else dict(vars(engine.model.args))
        if "max_position_embeddings" not in text_config(config):
            # A config may leave it out; the engine then runs with the model's default.
            config["max_position_embeddings"] = max_positions(vars(engine.model.args))
        return cls(name=info.name, config=config, thinking_mode=info.thinking_mode)


@dataclass(frozen=True)
class ContextLimits:
    """The model's context window in tokens (prompt and answer together)."""

    native: int
    # The window with YaRN switched on for one request; None when the model doesn't offer it.
    with_yarn: Optional[int]
    # The config itself already enables YaRN (so ``native`` is the extended window).
    yarn_in_config: bool = False

    def describe(self) -> str:
        text = f"{self.native:,} tokens"
        if self.yarn_in_config:
            text += " (YaRN enabled in the model's config)"
        elif self.with_yarn:
            text += f" ({self.with_yarn:,} with YaRN ×{DEFAULT_YARN_FACTOR:g})"
        return text


def context_limits(config: Mapping[str, Any], thinking_mode: str) -> ContextLimits:
    """The windows by ``mlx_backend.models.limits``, the rule the engine enforces.

    YaRN is offered per request only to the families whose cards publish a recipe
    (``limits.yarn_recipe``), and only where the config doesn't switch it on already."""
    positions = max_positions(config)
    scaling = normalize_rope_scaling(configured_rope(config))
    native = context_window(positions, scaling)
    model_type = config.get("model_type") or text_config(config).get("model_type")
    recipe = yarn_recipe(model_type, thinking_mode, positions, scaling)
    if recipe is not None and recipe.in_config:
        return ContextLimits(native=native, with_yarn=None, yarn_in_config=True)
    if recipe is not None:
        return ContextLimits(native=native, with_yarn=recipe.window(DEFAULT_YARN_FACTOR))
    return ContextLimits(native=native, with_yarn=None)


@dataclass(frozen=True)
class SummaryOptions:
    # Extra wishes for the final summary ("focus on the risks"); None: the default instructions.
    instructions: Optional[str] = None
    # Answer room: the final summary, and each part's summary in map-reduce.
    answer_tokens: int = 1536
    part_answer_tokens: int = 512
    # Summaries need no reasoning trace; None would use the model's default.
    enable_thinking: Optional[bool] = False
    allow_yarn: bool = True
    allow_kv8: bool = True
    # Memory budget override in bytes (None: what this machine allows).
    budget_bytes: Optional[int] = None
    seed: Optional[int] = None
    # The chat's system prompt: the same one as in follow-up turns, so their prefix matches.
    system_prompt: Optional[str] = None
    # Context kept free after the summary for a follow-up question and its answer (capped at a
    # third of the window), so asking about the document doesn't overflow right away.
    follow_up_tokens: int = 1024
