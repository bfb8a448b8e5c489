"""Our Qwen3 / Qwen3-MoE port computes what transformers and mlx-lm compute on the same folder.

Random-weight checkpoints in the Hugging Face layout are loaded three ways: through our loader,
by transformers (torch, CPU, fp32: the reference implementation) and by mlx-lm's own ports.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
import torch
from mlx_lm.generate import generate_step
from mlx_lm.utils import load_model as mlx_lm_load_model
from transformers import AutoModelForCausalLM

from mlx_backend.loading.loader import load_model
from mlx_backend.models import current_rope_scaling, set_rope_scaling
from tests.support.checkpoints import write_random_checkpoint

LOGIT_TOLERANCE = 1e-3
YARN = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32}
# A MoE with a dense layer in the middle (mlp_only_layers) and no top-k renormalisation.
MOE_MIXED = {"num_hidden_layers": 3, "mlp_only_layers": [1], "norm_topk_prob": False}
# Sparse every second layer only.
MOE_SPARSE_STEP = {"num_hidden_layers": 4, "decoder_sparse_step": 2}


def prompt_ids(length: int, seed: int = 1, high: int = 500) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, high, (1, length))


def our_logits(model, ids: np.ndarray) -> np.ndarray:
    return np.array(model(mx.array(ids)).astype(mx.float32))


def hf_model(path: Path):
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    return model.eval()


def hf_logits(model, ids: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.float().numpy()


def hf_greedy(model, ids: np.ndarray, steps: int) -> list[int]:
    """Greedy decoding by full recomputation: the simplest possible reference."""
    tokens = list(ids[0])
    with torch.no_grad():
        for _ in range(steps):
            logits = model(torch.tensor([tokens])).logits[0, -1]
            tokens.append(int(torch.argmax(logits)))
    return tokens[len(ids[0]) :]


def mlx_greedy(model, ids: np.ndarray, steps: int) -> list[int]:
    """Greedy decoding through mlx-lm's generate_step: KV cache, prefill chunks, argmax sampler."""
    generated = generate_step(mx.array(ids[0]), model, max_tokens=steps)
    return [int(token) for token, _ in generated]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("parity")
    specs = {
        "dense": dict(),
        "dense-tied": dict(tie_word_embeddings=True, seed=1),
        "moe": dict(moe=True, seed=2),
        "moe-mixed": dict(moe=True, seed=3, **MOE_MIXED),
        "moe-sparse-step": dict(moe=True, seed=4, **MOE_SPARSE_STEP),
        "dense-yarn": dict(rope_scaling=YARN, max_position_embeddings=128, seed=5),
        "moe-yarn": dict(moe=True, rope_scaling=YARN, max_position_embeddings=128, seed=6),
        # The same weights as the two above, without YaRN.
        "dense-plain": dict(max_position_embeddings=128, seed=5),
        "moe-plain": dict(moe=True, max_position_embeddings=128, seed=6),
    }
    return {name: write_random_checkpoint(root / name, **kw) for name, kw in specs.items()}


@pytest.mark.parametrize(
    "name", ["dense", "dense-tied", "moe", "moe-mixed", "moe-sparse-step"]
)
def test_logits_match_transformers_and_mlx_lm(checkpoints, name):
    path = checkpoints[name]
    ids = prompt_ids(24)
    model = load_model(path)
    ours = our_logits(model, ids)
    reference = hf_logits(hf_model(path), ids)
    mlx_lm_model, _ = mlx_lm_load_model(path)
    theirs = our_logits(mlx_lm_model, ids)

    assert ours.shape == reference.shape == (1, 24, model.args.vocab_size)
    assert np.abs(ours - reference).max() < LOGIT_TOLERANCE
    assert np.abs(ours - theirs).max() < LOGIT_TOLERANCE
    # Random weights give spread-out logits, so agreement above is not agreement on a constant.
    assert ours.std() > 0.5


def test_moe_layout_follows_sparse_step_and_mlp_only_layers(checkpoints):
    from mlx_backend.models.qwen3 import MLP
    from mlx_backend.models.qwen3_moe import SparseMoeBlock

    mixed = load_model(checkpoints["moe-mixed"])
    assert [type(layer.mlp) for layer in mixed.layers] == [SparseMoeBlock, MLP, SparseMoeBlock]
    stepped = load_model(checkpoints["moe-sparse-step"])
    assert [type(layer.mlp) for layer in stepped.layers] == [MLP, SparseMoeBlock] * 2


@pytest.mark.parametrize("name", ["dense", "moe"])
def test_greedy_32_tokens_match_transformers_and_mlx_lm(checkpoints, name):
    path = checkpoints[name]
    ids = prompt_ids(12, seed=7)
    ours = mlx_greedy(load_model(path), ids, 32)
    mlx_lm_model, _ = mlx_lm_load_model(path)

    assert ours == hf_greedy(hf_model(path), ids, 32)
    assert ours == mlx_greedy(mlx_lm_model, ids, 32)
    assert len(set(ours)) > 3  # a real continuation, not one token repeated


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_yarn_matches_transformers_beyond_original_context(checkpoints, kind):
    path = checkpoints[f"{kind}-yarn"]
    ids = prompt_ids(80, seed=8)  # well past original_max_position_embeddings=32
    model = load_model(path)
    reference = hf_model(path)

    ours = our_logits(model, ids)
    assert np.abs(ours - hf_logits(reference, ids)).max() < LOGIT_TOLERANCE
    # YaRN really is on: the same weights with plain RoPE give clearly different logits.
    plain = our_logits(load_model(checkpoints[f"{kind}-plain"]), ids)
    assert np.abs(ours - plain).max() > 0.1
    # And incremental decoding with a KV cache applies it at the right positions.
    assert mlx_greedy(model, ids, 12) == hf_greedy(reference, ids, 12)


def test_transformers5_rope_parameters_are_read(tmp_path, checkpoints):
    """transformers >= 5 writes rope_theta and the scaling under ``rope_parameters``."""
    nested = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32, "rope_theta": 1e6}
    path = write_random_checkpoint(
        tmp_path, rope_scaling=None, rope_parameters=nested, max_position_embeddings=128, seed=5
    )
    config = path / "config.json"
    data = json.loads(config.read_text())
    del data["rope_theta"], data["rope_scaling"]
    config.write_text(json.dumps(data))

    model = load_model(path)
    assert model.args.rope_theta == 1e6
    assert current_rope_scaling(model)["rope_type"] == "yarn"
    ids = prompt_ids(80, seed=8)
    expected = our_logits(load_model(checkpoints["dense-yarn"]), ids)
    assert np.abs(our_logits(model, ids) - expected).max() < 1e-5


def test_set_rope_scaling_switches_every_layer_in_place(checkpoints):
    ids = prompt_ids(80, seed=9)
    for kind in ("dense", "moe"):
        model = load_model(checkpoints[f"{kind}-plain"])
        plain = our_logits(model, ids)
        yarn = our_logits(load_model(checkpoints[f"{kind}-yarn"]), ids)

        set_rope_scaling(model, YARN)
        assert current_rope_scaling(model) == YARN
        assert np.abs(our_logits(model, ids) - yarn).max() < 1e-5

        set_rope_scaling(model, None)
        assert current_rope_scaling(model) is None
        assert np.abs(our_logits(model, ids) - plain).max() < 1e-5


def test_model_works_with_mlx_lm_quantized_kv_cache(tmp_path):
    """mlx-lm's generate_step can quantize our KV cache (long contexts on small Macs)."""
    # KV quantization groups run along head_dim, and MLX's smallest group is 32.
    model = load_model(write_random_checkpoint(tmp_path, head_dim=32))
    ids = prompt_ids(40, seed=10)
    quantized_kv = generate_step(
        mx.array(ids[0]), model, max_tokens=6, kv_bits=8, kv_group_size=32, quantized_kv_start=0
    )
    assert [int(t) for t, _ in quantized_kv] == mlx_greedy(model, ids, 6)
