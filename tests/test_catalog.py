"""The curated model list: what it offers and how the planner judges it."""

from __future__ import annotations

from mlx_backend.hub.catalog import CATALOG, find, recommended_default
from mlx_backend.memory.sizes import count_parameters

GB = 1e9
GiB = 2**30


def test_catalog_covers_the_qwen3_family_in_4_and_8_bit() -> None:
    families = {m.family for m in CATALOG}
    assert families == {
        "Qwen3-0.6B", "Qwen3-1.7B", "Qwen3-4B", "Qwen3-8B", "Qwen3-14B", "Qwen3-32B",
        "Qwen3-30B-A3B", "Qwen3-235B-A22B",
        "Qwen3-4B-Instruct-2507", "Qwen3-4B-Thinking-2507",
        "Qwen3-30B-A3B-Instruct-2507", "Qwen3-30B-A3B-Thinking-2507",
        "Qwen3.5-0.8B", "Qwen3.5-2B", "Qwen3.5-4B", "Qwen3.5-9B", "Qwen3.5-27B",
        "Qwen3.5-35B-A3B", "Qwen3.5-122B-A10B", "Qwen3.6-27B", "Qwen3.6-35B-A3B", "Qwen3.8-27B",
        "Qwen3-Next-80B-A3B-Instruct", "Qwen3-Next-80B-A3B-Thinking",
    }
    for family in families:
        assert sorted(m.bits for m in CATALOG if m.family == family) == [4, 8]
    assert all(m.repo_id == f"mlx-community/{m.family}-{m.bits}bit" for m in CATALOG)


def test_thinking_modes_and_context_lengths_match_the_releases() -> None:
    assert find("mlx-community/Qwen3-8B-4bit").thinking_mode == "hybrid"
    assert find("mlx-community/Qwen3-4B-Instruct-2507-4bit").thinking_mode == "never"
    assert find("mlx-community/Qwen3-30B-A3B-Thinking-2507-8bit").thinking_mode == "always"
    assert find("mlx-community/Qwen3-14B-8bit").context_length == 32768
    assert find("mlx-community/Qwen3-4B-Instruct-2507-8bit").context_length == 262144


def test_sizes_agree_with_the_published_mlx_community_files() -> None:
    # Sizes of the safetensors on Hugging Face, within 5%.
    published = {
        "mlx-community/Qwen3-8B-4bit": 4.62 * GB,
        "mlx-community/Qwen3-30B-A3B-4bit": 17.2 * GB,
        "mlx-community/Qwen3-0.6B-8bit": 0.63 * GB,
    }
    for repo, size in published.items():
        assert abs(find(repo).size_bytes - size) / size < 0.05, repo
    # 8-bit is about twice 4-bit; MoE keeps every expert resident.
    assert 1.7 < find("mlx-community/Qwen3-8B-8bit").size_bytes / find("mlx-community/Qwen3-8B-4bit").size_bytes < 2.0
    assert find("mlx-community/Qwen3-235B-A22B-4bit").size_bytes > 120 * GB


def test_badge_verdicts_follow_the_memory_budget() -> None:
    model = find("mlx-community/Qwen3-8B-4bit")
    assert model.plan(budget_bytes=64 * GiB).verdict == "fits"
    assert model.plan(budget_bytes=int(6.5 * GiB)).verdict == "tight"
    assert model.plan(budget_bytes=4 * GiB).verdict == "wont_fit"


def test_first_run_default_depends_on_the_machines_memory() -> None:
    # Budgets of about two thirds of each Mac's memory (Metal's recommended working set).
    expected = {
        8: "mlx-community/Qwen3.5-4B-4bit",
        16: "mlx-community/Qwen3.5-9B-4bit",
        36: "mlx-community/Qwen3.6-35B-A3B-4bit",
        64: "mlx-community/Qwen3.6-35B-A3B-4bit",
        128: "mlx-community/Qwen3.5-122B-A10B-4bit",
        512: "mlx-community/Qwen3.5-122B-A10B-4bit",
    }
    for memory_gb, repo in expected.items():
        budget = int(memory_gb * GiB * 0.67)
        choice = recommended_default(budget)
        assert choice.repo_id == repo, memory_gb
        assert choice.plan(budget_bytes=budget).verdict == "fits"
    # A 2 GiB budget (an old 3 GB machine): the 2026 2B still fits, ahead of Qwen3-1.7B.
    assert recommended_default(int(2 * GiB)).repo_id == "mlx-community/Qwen3.5-2B-4bit"
    # When nothing fits comfortably, the smallest model is still suggested (the badge says why).
    tiny_budget = int(0.3 * GiB)
    assert recommended_default(tiny_budget).repo_id == "mlx-community/Qwen3-0.6B-4bit"
    assert recommended_default(tiny_budget).plan(budget_bytes=tiny_budget).verdict == "wont_fit"


def test_the_recommendation_weighs_every_catalog_family() -> None:
    from mlx_backend.hub.catalog import _DEFAULT_PREFERENCE

    assert {find(repo).family for repo in _DEFAULT_PREFERENCE} == {m.family for m in CATALOG}
    # Each choice is the first in that order that fits: nothing earlier in the list fits.
    for memory_gb in (8, 16, 36, 64, 128):
        budget = int(memory_gb * GiB * 0.67)
        choice = recommended_default(budget).repo_id
        earlier = _DEFAULT_PREFERENCE[: _DEFAULT_PREFERENCE.index(choice)]
        assert all(find(repo).plan(budget_bytes=budget).verdict != "fits" for repo in earlier)


def test_hybrid_entries_have_the_published_dimensions() -> None:
    import json

    import pytest

    from mlx_backend.models.shape import ModelShape
    from tests.support.hybrid_checkpoints import FAMILY, hybrid_fixtures_available

    if not hybrid_fixtures_available():
        pytest.skip("shared fixtures missing")
    for family in ("Qwen3.5-0.8B", "Qwen3.5-2B", "Qwen3.5-4B", "Qwen3.5-9B", "Qwen3.5-27B",
                   "Qwen3.5-35B-A3B", "Qwen3.6-27B", "Qwen3.8-27B", "Qwen3-Next-80B-A3B-Instruct"):
        published = json.loads((FAMILY / family / "config.json").read_text())
        entry = find(f"mlx-community/{family}-4bit")
        assert ModelShape.from_config(entry.config) == ModelShape.from_config(published), family
        assert entry.context_length == 262144
        # Same weights as the published release (text model), before quantization.
        bf16 = {k: v for k, v in entry.config.items() if k != "quantization"}
        assert count_parameters(bf16) == count_parameters(published), family


def test_hybrid_sizes_modes_and_large_macs() -> None:
    assert find("mlx-community/Qwen3.5-9B-4bit").thinking_mode == "hybrid"
    assert find("mlx-community/Qwen3-Next-80B-A3B-Instruct-4bit").thinking_mode == "never"
    assert find("mlx-community/Qwen3-Next-80B-A3B-Thinking-8bit").thinking_mode == "always"
    assert [m.family for m in CATALOG if m.large_mac] == ["Qwen3.5-122B-A10B"] * 2
    big = find("mlx-community/Qwen3.5-122B-A10B-4bit")
    assert 115e9 < count_parameters(big.config) < 125e9  # "122B": derived dims, see the catalog
    assert big.plan(budget_bytes=int(64 * GiB * 0.67)).verdict == "wont_fit"
    # 4-bit MoE: the routers and shared-expert gates stay at 8 bits, under the module paths.
    q = find("mlx-community/Qwen3.5-35B-A3B-4bit").config["quantization"]
    assert q["language_model.model.layers.0.mlp.gate"] == {"group_size": 64, "bits": 8}
    assert q["language_model.model.layers.39.mlp.shared_expert_gate"]["bits"] == 8
    assert "model.layers.47.mlp.gate" in find("mlx-community/Qwen3-Next-80B-A3B-Instruct-4bit").config["quantization"]
