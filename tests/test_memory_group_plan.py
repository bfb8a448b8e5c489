"""The multi-Mac planner: which layers each Mac of a pipeline holds and what that costs, from
the published configs; and the single-Mac plan pointing to it when a model is too big."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from mlx.utils import tree_flatten

from app.remote.plan_line import group_plan_line
from mlx_backend.distributed.stages import stage_layers
from mlx_backend.hub.catalog import CATALOG
from mlx_backend.loading.loader import load_model
from mlx_backend.memory.plan import plan_group, plan_memory, smallest_group
from mlx_backend.memory.sizes import (
    GB,
    estimate_kv_cache_bytes,
    estimate_linear_state_bytes,
    estimate_weights_bytes,
    weight_parts,
)
from tests.support.checkpoints import write_random_checkpoint

CONTEXT = 8192


def catalog_config(repo_id: str) -> dict:
    return next(entry.config for entry in CATALOG if entry.repo_id == repo_id)


def test_stages_are_contiguous_and_as_even_as_the_count_allows() -> None:
    assert stage_layers(94, 2) == [range(0, 47), range(47, 94)]
    assert stage_layers(94, 3) == [range(0, 32), range(32, 63), range(63, 94)]
    assert stage_layers(4, 4) == [range(i, i + 1) for i in range(4)]
    with pytest.raises(ValueError):
        stage_layers(3, 4)
    with pytest.raises(ValueError):
        stage_layers(3, 0)


def test_a_235b_model_too_big_for_one_mac_is_planned_onto_two() -> None:
    config = catalog_config("mlx-community/Qwen3-235B-A22B-4bit")
    budget = int(96 * GB)
    alone = plan_memory(config, CONTEXT, budget_bytes=budget)
    assert alone.verdict == "wont_fit"
    assert "It would fit on 2 Macs with 96.0 GB available" in alone.message

    group = plan_group(config, 2, CONTEXT, budget_bytes=budget)
    first, second = group.stages
    # The pipeline's order: rank 0 (Mac 1) holds the last layers.
    assert (first.layers, second.layers) == (range(47, 94), range(0, 47))
    parts = weight_parts(config)
    shared = parts.embedding_bytes + parts.head_bytes  # on every Mac
    assert first.weights_bytes + second.weights_bytes == estimate_weights_bytes(config) + shared
    assert first.kv_cache_bytes + second.kv_cache_bytes == pytest.approx(estimate_kv_cache_bytes(config, CONTEXT), abs=2)
    assert first.weights_bytes == pytest.approx(estimate_weights_bytes(config) / 2, rel=0.02)
    assert group.fits and group.largest_share_bytes < budget
    assert "Mac 1: layers 47-93" in group.message and "Mac 2: layers 0-46" in group.message


def test_the_smallest_group_grows_with_the_model_and_gives_up_past_eight_macs() -> None:
    budget = int(96 * GB)
    assert smallest_group(catalog_config("mlx-community/Qwen3-235B-A22B-8bit"), CONTEXT, None, budget).hosts == 3
    assert smallest_group(catalog_config("mlx-community/Qwen3-235B-A22B-8bit"), CONTEXT, None, int(8 * GB)) is None
    # A model that fits one Mac gets no multi-Mac advice.
    assert "Macs" not in plan_memory(catalog_config("mlx-community/Qwen3-8B-4bit"), CONTEXT, budget_bytes=budget).message


def test_a_hybrid_keeps_kv_only_on_its_attention_layers_and_state_on_the_others() -> None:
    config = catalog_config("mlx-community/Qwen3.5-122B-A10B-4bit")
    group = plan_group(config, 3, CONTEXT, budget_bytes=int(64 * GB))
    parts = weight_parts(config)
    assert sum(stage.kv_cache_bytes for stage in group.stages) == pytest.approx(estimate_kv_cache_bytes(config, CONTEXT), abs=3)
    assert sum(stage.linear_state_bytes for stage in group.stages) == pytest.approx(estimate_linear_state_bytes(config), abs=3)
    shared = parts.embedding_bytes + parts.head_bytes
    assert sum(stage.weights_bytes for stage in group.stages) == estimate_weights_bytes(config) + 2 * shared
    assert all(stage.linear_state_bytes > 0 and stage.kv_cache_bytes > 0 for stage in group.stages)


def test_with_tied_embeddings_every_mac_holds_the_embedding_once() -> None:
    config = catalog_config("mlx-community/Qwen3-0.6B-4bit")
    parts = weight_parts(config)
    assert parts.tied_embeddings and parts.embedding_bytes > 0
    for stage in plan_group(config, 2, CONTEXT, budget_bytes=int(16 * GB)).stages:
        layers = sum(parts.layer_bytes[i] for i in stage.layers)
        assert stage.weights_bytes == layers + parts.embedding_bytes + parts.head_bytes


@pytest.mark.parametrize("moe", [False, True])
def test_each_layers_size_is_what_a_loaded_checkpoint_holds(tmp_path, moe) -> None:
    path = Path(write_random_checkpoint(tmp_path / "ckpt", moe=moe, tokenizer=None))
    model = load_model(path)
    config = json.loads((path / "config.json").read_text())
    loaded = [sum(v.nbytes for _, v in tree_flatten(layer.parameters())) for layer in model.model.layers]
    parts = weight_parts(config)
    assert list(parts.layer_bytes) == loaded
    assert parts.embedding_bytes == model.model.embed_tokens.weight.nbytes


def test_the_several_macs_window_line_comes_from_the_planner_or_is_empty(tmp_path) -> None:
    config = catalog_config("mlx-community/Qwen3-235B-A22B-4bit")
    assert group_plan_line(config, 2, budget_bytes=int(96 * GB)) == plan_group(config, 2, CONTEXT, budget_bytes=int(96 * GB)).message
    (tmp_path / "config.json").write_text("{not json")
    assert group_plan_line(tmp_path, 2) == ""
