"""Long context for the 2026 hybrids: the YaRN recipe per family (limits.yarn_recipe), the engine
refusing YaRN where no card publishes one, and YaRN on a Qwen3.5 model equal to transformers'."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest

from mlx_backend.documents.summary.facts import context_limits
from mlx_backend.errors import RequestError
from mlx_backend.models.limits import yarn_recipe
from mlx_backend.models.shape import ModelShape
from tests.support.hybrid_checkpoints import FAMILY, hybrid_fixtures_available

needs_fixtures = pytest.mark.skipif(not hybrid_fixtures_available(), reason="shared fixtures missing")
RELEASES = ["Qwen3.5-0.8B", "Qwen3.5-9B", "Qwen3.5-35B-A3B", "Qwen3.6-27B", "Qwen3.8-27B",
            "Qwen3-Next-80B-A3B-Instruct"]


def published(name: str) -> dict:
    return json.loads((FAMILY / name / "config.json").read_text())


@needs_fixtures
@pytest.mark.parametrize("name", RELEASES)
def test_published_hybrids_are_262k_native_and_1m_with_the_cards_yarn(name):
    config = published(name)
    shape = ModelShape.from_config(config)
    assert shape.max_position_embeddings == 262144
    for mode in ("hybrid", "never", "always"):  # the recipe follows the architecture's card
        recipe = yarn_recipe(shape.model_type, mode, shape.max_position_embeddings, shape.rope_scaling)
        assert (recipe.factor, recipe.original_context, recipe.in_config) == (4.0, 262144, False)
        limits = context_limits(config, mode)
        # 4 x 262,144 = 1,048,576, but the cards say "extensible up to 1,010,000 tokens".
        assert (limits.native, limits.with_yarn) == (262144, 1_010_000)


def test_qwen3_rules_are_unchanged_and_2507_has_no_recipe():
    assert yarn_recipe("qwen3", "hybrid", 40960, None).window() == 131072
    assert yarn_recipe("qwen3_moe", "hybrid", 40960, None).original_context == 32768
    for mode in ("never", "always"):
        assert yarn_recipe("qwen3", mode, 262144, None) is None
        assert yarn_recipe("qwen3_moe", mode, 262144, None) is None


def test_a_config_that_says_yarn_is_its_own_recipe():
    scaling = {"rope_type": "yarn", "factor": 2.0, "original_max_position_embeddings": 131072}
    for model_type, mode in (("qwen3_5", "hybrid"), ("qwen3", "never")):
        recipe = yarn_recipe(model_type, mode, 262144, scaling)
        assert (recipe.factor, recipe.original_context, recipe.in_config) == (2.0, 131072, True)
        assert recipe.window() == 262144
    config = {"model_type": "qwen3_5", "text_config": {"max_position_embeddings": 262144,
                                                        "rope_parameters": {**scaling, "rope_theta": 1e7}}}
    limits = context_limits(config, "hybrid")
    assert (limits.native, limits.with_yarn, limits.yarn_in_config) == (262144, None, True)


def test_no_recipe_means_a_clear_refusal_and_no_yarn_hint(tmp_path):
    from dataclasses import replace

    from mlx_backend.errors import ContextOverflowError
    from mlx_backend.events import ChatMessage, ChatRequest
    from mlx_backend.generation.engine import Engine
    from mlx_backend.loading.loader import load
    from tests.support.checkpoints import write_random_checkpoint

    folder = write_random_checkpoint(tmp_path / "m2507", tokenizer="qwen3-instruct-2507", max_position_embeddings=64)
    engine = Engine(*load(folder))
    assert engine.tokenizer.thinking_mode == "never"
    assert engine.info.yarn_context_length is None
    request = ChatRequest(messages=(ChatMessage("user", "hi"),), max_tokens=8)
    with pytest.raises(RequestError, match="no published long-context \\(YaRN\\) recipe"):
        engine.prepare(replace(request, yarn_factor=4.0))
    long = replace(request, messages=(ChatMessage("user", "word " * 200),))
    with pytest.raises(ContextOverflowError) as error:
        engine.prepare(long)
    assert "YaRN" not in str(error.value)


# --- YaRN on a Qwen3.5 hybrid against transformers ------------------------------------------

@pytest.fixture(scope="module")
def dense_folder(tmp_path_factory) -> Path:
    pytest.importorskip("torch")
    if not hybrid_fixtures_available():
        pytest.skip("shared fixtures missing")
    from tests.support.hybrid_checkpoints import write_hybrid_checkpoint

    return write_hybrid_checkpoint(tmp_path_factory.mktemp("q35") / "dense", kind="dense", tokenizer=False)


def test_yarn_on_a_qwen3_5_model_matches_transformers(dense_folder: Path):
    import torch
    from transformers import AutoModelForImageTextToText

    from mlx_backend.loading.loader import load_model
    from mlx_backend.models import set_rope_scaling

    # A small original window so that 80 positions are far past it (the ramp and mscale matter).
    recipe = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}
    ids = np.random.default_rng(3).integers(0, 500, (1, 80))

    model = load_model(dense_folder)
    plain = np.array(model(mx.array(ids)).astype(mx.float32))
    set_rope_scaling(model, recipe)
    ours = np.array(model(mx.array(ids)).astype(mx.float32))

    config = json.loads((dense_folder / "config.json").read_text())
    rope = config["text_config"].get("rope_parameters") or {}
    config["text_config"]["rope_parameters"] = {**rope, **recipe}
    (dense_folder / "config.json").write_text(json.dumps(config))
    reference = AutoModelForImageTextToText.from_pretrained(dense_folder, dtype=torch.float32).eval()
    assert reference.config.text_config.rope_parameters["rope_type"] == "yarn"
    with torch.no_grad():
        theirs = reference(input_ids=torch.tensor(ids)).logits.float().numpy()

    assert np.abs(ours - theirs).max() < 1e-4
    assert np.abs(ours - plain).max() > 0.05  # YaRN really changed the computation


@pytest.fixture(scope="module")
def next_engine(tmp_path_factory):
    """A tiny Qwen3-Next engine (Qwen3 vocabulary, so the small Qwen3 tokenizer files do) with a
    64-position window, so that the recipe's window (4 x 64) is reachable by a prompt."""
    pytest.importorskip("torch")
    if not hybrid_fixtures_available():
        pytest.skip("shared fixtures missing")
    from mlx_backend.generation.engine import Engine
    from mlx_backend.loading.loader import load
    from tests.support.hybrid_checkpoints import write_hybrid_checkpoint
    from tests.support.tokenizers import write_qwen3_tokenizer

    folder = write_hybrid_checkpoint(tmp_path_factory.mktemp("next") / "next", kind="next",
                                     tokenizer=False, max_position_embeddings=64, vocab_size=151936)
    write_qwen3_tokenizer(folder, "hybrid")
    return Engine(*load(folder))


def test_engine_on_a_hybrid_uses_the_recipe_window_rope_and_hint(next_engine):
    from dataclasses import replace

    from mlx_backend.errors import ContextOverflowError
    from mlx_backend.events import ChatMessage, ChatRequest

    engine = next_engine
    assert engine.info.context_length == 64 and engine.info.yarn_context_length == 256
    request = ChatRequest(messages=(ChatMessage("user", "one two three " * 20),), max_tokens=16)
    prepared = engine.prepare(replace(request, yarn_factor=4.0))
    assert prepared.rope_scaling == {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 64}
    assert 64 < len(prepared.prompt) + 16 <= 256  # too long natively, fits with YaRN
    with pytest.raises(ContextOverflowError, match=r"turn on long context \(YaRN\) for up to 256 tokens"):
        engine.prepare(request)


def test_the_cards_recipe_written_into_the_config_keeps_the_published_limit():
    from mlx_backend.models.limits import yarn_recipe

    rope = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 262144,
            "rope_theta": 10000000, "partial_rotary_factor": 0.25}
    configured = yarn_recipe("qwen3_5", "hybrid", 262144, rope)
    plain = yarn_recipe("qwen3_5", "hybrid", 262144, None)
    assert configured.in_config and configured.window() == plain.window() == 1_010_000
