"""Tensor parallelism on 2 local ranks: the same logits and greedy tokens as one process, each
rank holding about half of the sharded matrices, and clear errors for models that don't split."""

import json
import os
import subprocess
import sys

import mlx.core as mx
import numpy as np
import pytest

from mlx_backend.distributed.tensor_parallel import (
    TensorParallelError,
    shard_model,
    tensor_parallel_pays,
)
from mlx_backend.hub.catalog import find
from mlx_backend.loading.loader import load_model
from tests.support.checkpoints import write_random_checkpoint
from tests.support.launch import RANK_SCRIPTS, REPO, launch

# Layers' matrices dominate (the tiny tokenizer's vocabulary is small), so 1/N shows.
WIDE = {"hidden_size": 256, "intermediate_size": 768, "num_attention_heads": 8,
        "num_key_value_heads": 4, "head_dim": 32}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    from mlx_backend.loading.quantize import convert

    root = tmp_path_factory.mktemp("tp")
    float32 = write_random_checkpoint(root / "float32", **WIDE)
    return {
        "float32": float32,
        # Group size 32: each rank's half of o_proj / down_proj inputs is whole groups.
        "4bit": convert(float32, root / "4bit", bits=4, group_size=32),
        "8bit": convert(float32, root / "8bit", bits=8, group_size=32),
    }


def run_single(folder, out):
    """The rank script as one plain process (a group of one: an ordinary load)."""
    done = subprocess.run(
        [sys.executable, str(RANK_SCRIPTS / "tp_model.py"), str(folder), str(out)],
        capture_output=True, text=True, timeout=180, cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("kind", ["float32", "4bit", "8bit"])
def test_two_ranks_match_one_process(checkpoints, kind, tmp_path):
    folder = checkpoints[kind]
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    single = run_single(folder, tmp_path / "one")
    result = launch("tp_model.py", 2, str(folder), str(tmp_path / "two"), timeout=180)
    assert result.returncode == 0, result.stderr[-2000:]
    reports = result.reports()
    assert sorted(reports) == [0, 1]

    expected = np.array(mx.load(str(tmp_path / "one" / "logits-rank0.npy")))
    for rank in (0, 1):
        logits = np.array(mx.load(str(tmp_path / "two" / f"logits-rank{rank}.npy")))
        assert logits.shape == expected.shape
        # Only the all-reduce's summation order differs from one process.
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
        assert (logits.argmax(-1) == expected.argmax(-1)).all()

    for rank, report in reports.items():
        assert report["size"] == 2
        # Greedy through the unchanged Engine: the same tokens as one process.
        assert report["text"] == single["text"] != ""
        assert report["generation_tokens"] == single["generation_tokens"]
        # Resident: half of every sharded matrix; the rest (embeddings, head, norms) whole.
        assert report["sharded_bytes"] == single["sharded_bytes"] // 2
        replicated = single["weights_bytes"] - single["sharded_bytes"]
        assert report["weights_bytes"] == replicated + single["sharded_bytes"] // 2
        assert report["load_info_bytes"] == report["weights_bytes"]
        # What MLX actually holds after the load, and at its peak (one tensor read whole at
        # a time), is about the rank's share (small packed arrays cost some allocator
        # rounding), well below the whole model one process holds.
        below_whole = replicated + 0.75 * single["sharded_bytes"]
        assert report["weights_bytes"] <= report["active_bytes"] < below_whole
        assert report["peak_bytes"] < below_whole
        assert single["active_bytes"] >= single["weights_bytes"]


def test_heads_that_do_not_divide_give_a_clear_error(checkpoints, tmp_path):
    """3 ranks and a model of 8 heads / 4 KV heads: every rank says why before loading."""
    result = launch("tp_model.py", 3, str(checkpoints["float32"]), str(tmp_path), timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    reports = result.reports()
    assert sorted(reports) == [0, 1, 2]
    for report in reports.values():
        assert "8 attention heads" in report["error"]
        assert "not divisible by 3" in report["error"]


class StandInGroup:
    """The two methods shard_model asks a group before it shards anything."""

    def __init__(self, size):
        self._size = size

    def size(self):
        return self._size

    def rank(self):
        return 0


def test_kv_heads_that_do_not_divide_are_named(tmp_path):
    folder = write_random_checkpoint(tmp_path / "m", tokenizer=None, num_attention_heads=8,
                                     num_key_value_heads=2, head_dim=8)
    with pytest.raises(TensorParallelError, match=r"2 key/value heads .* not divisible by 4"):
        shard_model(load_model(folder, lazy=True), StandInGroup(4))


def test_quantized_groups_that_do_not_split_are_named(tmp_path):
    from mlx_backend.loading.quantize import convert

    float32 = write_random_checkpoint(tmp_path / "f", tokenizer=None)  # o_proj has 64 inputs
    quantized = convert(float32, tmp_path / "q", bits=4, group_size=64)
    with pytest.raises(TensorParallelError, match=r"o_proj packs its 64 inputs in groups of 64"):
        shard_model(load_model(quantized, lazy=True), StandInGroup(2))


def test_moe_models_are_sent_to_pipeline_stages(tmp_path):
    folder = write_random_checkpoint(tmp_path / "moe", moe=True, tokenizer=None)
    with pytest.raises(TensorParallelError, match="pipeline stages"):
        shard_model(load_model(folder, lazy=True), StandInGroup(2))


def test_tensor_parallel_pays_for_big_dense_models_over_rdma_only():
    big = find("mlx-community/Qwen3-32B-4bit").config
    small = find("mlx-community/Qwen3-0.6B-4bit").config
    moe = find("mlx-community/Qwen3-30B-A3B-4bit").config
    assert tensor_parallel_pays(big, 2, "jaccl")[0]
    assert not tensor_parallel_pays(big, 2, "ethernet-ring")[0]
    assert not tensor_parallel_pays(small, 2, "jaccl")[0]  # too little to read to save
    assert not tensor_parallel_pays(moe, 2, "jaccl")[0]
    assert not tensor_parallel_pays(big, 1, "jaccl")[0]
    pays, reason = tensor_parallel_pays(big, 2, "jaccl")
    assert "128 per token" in reason  # 64 layers, two all-reduces each
    with pytest.raises(ValueError, match="link must be one of"):
        tensor_parallel_pays(big, 2, "wifi")


@pytest.fixture(scope="module")
def hybrid_checkpoint(tmp_path_factory):
    from tests.support.hybrid_checkpoints import hybrid_fixtures_available, write_hybrid_checkpoint

    if not hybrid_fixtures_available():
        pytest.skip("the Qwen3.5-family tokenizer fixtures are missing")
    return write_hybrid_checkpoint(tmp_path_factory.mktemp("tp35") / "model", "dense")


def test_qwen3_5_dense_on_two_ranks_matches_one_process(hybrid_checkpoint, tmp_path):
    """The hybrid (Gated DeltaNet + full attention) through mlx-lm's shard in our wrapper:
    its linear-attention heads, attention heads, MLP and vocabulary (the head) are split."""
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    single = run_single(hybrid_checkpoint, tmp_path / "one")
    result = launch("tp_model.py", 2, str(hybrid_checkpoint), str(tmp_path / "two"), timeout=240)
    assert result.returncode == 0, result.stderr[-2000:]
    reports = result.reports()
    assert sorted(reports) == [0, 1]
    expected = np.array(mx.load(str(tmp_path / "one" / "logits-rank0.npy")))
    for rank in (0, 1):
        logits = np.array(mx.load(str(tmp_path / "two" / f"logits-rank{rank}.npy")))
        np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)
    for report in reports.values():
        assert report["text"] == single["text"] != ""
        assert report["sharded_bytes"] == single["sharded_bytes"] // 2
        # The layers' matrices and the head are halved; the embeddings and norms stay whole.
        assert report["weights_bytes"] < single["weights_bytes"] - single["sharded_bytes"] // 2
        assert report["weights_bytes"] <= report["active_bytes"] < single["weights_bytes"]
