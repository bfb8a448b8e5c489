"""Pipeline stages on 2 and 3 local ranks: each rank loads only its layers (plus the embedding
and head every rank keeps), its logits and greedy tokens equal one process holding the whole
model, for our Qwen3 dense and MoE ports and the hybrids; and what each rank holds is exactly
what the multi-Mac planner says."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest

from mlx_backend.distributed.pipeline import PipelineError, split_into_stages
from mlx_backend.distributed.stages import stage_layers
from mlx_backend.loading.loader import load_model
from mlx_backend.memory.sizes import weight_parts
from tests.support.checkpoints import write_random_checkpoint
from tests.support.launch import launch

WIDE = {"hidden_size": 128, "intermediate_size": 384}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from mlx_backend.loading.quantize import convert

    root = tmp_path_factory.mktemp("pipeline")
    dense = write_random_checkpoint(root / "dense", tokenizer=None, num_hidden_layers=6, **WIDE)
    found = {
        "dense": dense,
        "dense-4bit": convert(dense, root / "dense-4bit", bits=4, group_size=32),
        "moe": write_random_checkpoint(root / "moe", moe=True, tokenizer=None, num_hidden_layers=6),
    }
    from tests.support.hybrid_checkpoints import write_hybrid_checkpoint

    found["qwen3.5"] = write_hybrid_checkpoint(root / "qwen3.5", "dense", tokenizer=False, num_hidden_layers=8)
    found["qwen3.5-moe"] = write_hybrid_checkpoint(root / "qwen3.5-moe", "moe", tokenizer=False, num_hidden_layers=8)
    found["qwen3-next"] = write_hybrid_checkpoint(root / "qwen3-next", "next", tokenizer=False, num_hidden_layers=8)
    return found


def run_stages(folder: Path, ranks: int) -> dict[int, dict]:
    result = launch("stage_logits.py", ranks, str(folder))
    assert result.returncode == 0, result.stderr[-3000:]
    reports = result.reports()
    assert sorted(reports) == list(range(ranks)), result.stdout[-2000:]
    return reports


@pytest.mark.parametrize(
    "kind, ranks",
    [("dense", 2), ("dense", 3), ("dense-4bit", 2), ("moe", 2), ("qwen3.5", 2), ("qwen3.5", 3),
     ("qwen3.5-moe", 2), ("qwen3-next", 2)],
)
def test_stages_give_one_process_logits_and_hold_only_their_layers(checkpoints, kind, ranks) -> None:
    folder = Path(checkpoints[kind])
    reports = run_stages(folder, ranks)
    config = json.loads((folder / "config.json").read_text())
    parts = weight_parts(config)
    ranges = stage_layers(len(parts.layer_bytes), ranks)
    shared = parts.embedding_bytes + parts.head_bytes
    for rank, report in reports.items():
        assert report["max_diff"] <= 1e-5, (rank, report["max_diff"])
        assert report["stage_tokens"] == report["whole_tokens"]
        # rank 0 holds the last layers, the highest rank the first (mlx-lm's order).
        held = ranges[ranks - 1 - rank]
        assert (report["start"], report["layers"]) == (held.start, len(held))
        # Exactly its layers' weights and the shared ones, as the planner counts them ...
        assert report["stage_bytes"] == shared + sum(parts.layer_bytes[i] for i in held)
        # ... and nothing more was read: MLX allocated just that while loading.
        assert report["stage_resident"] == report["stage_bytes"]
        assert report["whole_bytes"] == shared + sum(parts.layer_bytes)
    layer_share = [(r["stage_bytes"] - shared) / sum(parts.layer_bytes) for r in reports.values()]
    assert sum(layer_share) == pytest.approx(1.0)
    assert max(layer_share) <= 1 / ranks + 1 / len(parts.layer_bytes)


@dataclass
class FakeGroup:
    """Just what the split asks of a group: its size and this rank."""

    ranks: int
    this: int

    def size(self) -> int:
        return self.ranks

    def rank(self) -> int:
        return self.this


def test_a_model_with_fewer_layers_than_ranks_is_refused_with_the_counts(tmp_path) -> None:
    model = load_model(write_random_checkpoint(tmp_path / "m", tokenizer=None, num_hidden_layers=3), lazy=True)
    with pytest.raises(PipelineError, match="can't run on 4 Macs: 3 layers can't be split into 4 stages"):
        split_into_stages(model, FakeGroup(4, 0))


def test_one_process_keeps_every_layer(tmp_path) -> None:
    model = load_model(write_random_checkpoint(tmp_path / "m", tokenizer=None, num_hidden_layers=3), lazy=True)
    assert split_into_stages(model, FakeGroup(1, 0)) == range(3)
    assert len(model.layers) == 3


def test_an_engine_of_stages_answers_like_one_process_across_turns_and_a_cancel(tmp_path) -> None:
    """Chunked prefill (2,600 tokens, 512 a chunk), the prompt cache on a follow-up, a cancel
    on one rank stopping all of them, and a turn after it: as the whole model alone answers."""
    folder = write_random_checkpoint(tmp_path / "chat", num_hidden_layers=6)
    result = launch("engine_stages.py", 2, str(folder))
    reports = result.reports()
    assert sorted(reports) == [0, 1], result.stderr[-3000:]
    for report in reports.values():
        first, follow, cancelled, after = report["group"]
        alone = report["alone"]
        assert first == alone[0] and first["prompt"] > 2 * 512
        assert follow == alone[1] and follow["cached"] > first["prompt"]
        assert cancelled["reason"] == "cancelled" and alone[2]["text"].startswith(cancelled["text"])
        assert after == alone[3]
        assert report["held"] < report["whole"]
    assert reports[0]["group"] == reports[1]["group"]  # the ranks stopped at the same token
