"""The curated model list: what it offers and how the planner judges it."""

from __future__ import annotations

from mlx_backend.hub.catalog import CATALOG, find, recommended_default

GB = 1e9
GiB = 2**30


def test_catalog_covers_the_qwen3_family_in_4_and_8_bit() -> None:
    families = {m.family for m in CATALOG}
    assert families == {
        "Qwen3-0.6B", "Qwen3-1.7B", "Qwen3-4B", "Qwen3-8B", "Qwen3-14B", "Qwen3-32B",
        "Qwen3-30B-A3B", "Qwen3-235B-A22B",
        "Qwen3-4B-Instruct-2507", "Qwen3-4B-Thinking-2507",
        "Qwen3-30B-A3B-Instruct-2507", "Qwen3-30B-A3B-Thinking-2507",
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
    # Budgets of about two thirds of 8, 16 and 64 GB Macs (Metal's recommended working set).
    assert recommended_default(int(8 * GiB * 0.67)).repo_id == "mlx-community/Qwen3-4B-Instruct-2507-4bit"
    assert recommended_default(int(16 * GiB * 0.67)).repo_id == "mlx-community/Qwen3-8B-4bit"
    assert recommended_default(int(64 * GiB * 0.67)).repo_id == "mlx-community/Qwen3-30B-A3B-Instruct-2507-4bit"
    assert recommended_default(int(2 * GiB)).repo_id in (
        "mlx-community/Qwen3-1.7B-4bit", "mlx-community/Qwen3-0.6B-4bit"
    )
    # When nothing fits comfortably, the smallest model is still suggested (the badge says why).
    tiny_budget = 1 * GiB
    assert recommended_default(tiny_budget).repo_id == "mlx-community/Qwen3-0.6B-4bit"
    assert recommended_default(tiny_budget).plan(budget_bytes=tiny_budget).verdict == "wont_fit"
