"""The hybrid architectures (Qwen3.5 dense, Qwen3.5 MoE, Qwen3-Next) against transformers.

The checkpoints are written by transformers itself (random fp32 weights, norms included), and
its own model is the reference: logits over 40 and 2,000+ tokens, tied and untied embeddings;
a prompt fed in chunks through the recurrent state equals one pass. The published configs of
the family build (without weights) and ModelShape says what the built models are.
"""

from __future__ import annotations

import json

import mlx.core as mx
import numpy as np
import pytest

from mlx_backend.loading.loader import architecture, load_model, model_args
from mlx_backend.models.shape import ModelShape
from tests.support.hybrid_checkpoints import FAMILY, write_hybrid_checkpoint

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

KINDS = ["dense", "moe", "next"]
VOCAB = 512
# Relative to the largest logit: float32 on both sides, different kernels and summation orders.
TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """(kind, tied) -> folder, written once for the module."""
    root = tmp_path_factory.mktemp("hybrid-parity")
    return {
        (kind, tied): write_hybrid_checkpoint(
            root / f"{kind}-{'tied' if tied else 'untied'}", kind, tokenizer=False,
            tie_word_embeddings=tied, seed=7,
        )
        for kind in KINDS
        for tied in (False, True)
    }


def reference_logits(folder, kind: str, ids: np.ndarray) -> np.ndarray:
    cls = (
        transformers.Qwen3NextForCausalLM
        if kind == "next"
        else transformers.AutoModelForImageTextToText  # the multimodal class the folder names
    )
    model = cls.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        return model(torch.tensor(ids)).logits.numpy()


def ours(model, ids: np.ndarray, cache=None) -> np.ndarray:
    return np.array(model(mx.array(ids), cache=cache).astype(mx.float32))


def prompt(length: int, seed: int = 0) -> np.ndarray:
    return np.random.RandomState(seed).randint(0, VOCAB, size=(1, length))


def assert_close_to_reference(actual: np.ndarray, expected: np.ndarray) -> None:
    scale = float(np.abs(expected).max())
    assert scale > 0.5  # random weights give logits of order 1: a zero model would pass otherwise
    error = float(np.abs(actual - expected).max())
    assert error <= TOLERANCE * scale, f"max |diff| {error:.3g} at logit scale {scale:.3g}"


@pytest.mark.parametrize("tied", [False, True], ids=["untied", "tied"])
@pytest.mark.parametrize("kind", KINDS)
def test_logits_match_transformers_on_40_tokens(checkpoints, kind, tied):
    folder = checkpoints[(kind, tied)]
    model = load_model(folder)
    ids = prompt(40)

    head = model.language_model if kind != "next" else model
    assert ("lm_head" in head) is not tied
    assert_close_to_reference(ours(model, ids), reference_logits(folder, kind, ids))


@pytest.mark.parametrize("kind", ["dense", "moe"])
def test_tied_by_the_top_level_flag_alone_as_transformers_reads_it(tmp_path, checkpoints, kind):
    import shutil

    folder = shutil.copytree(checkpoints[(kind, True)], tmp_path / kind)
    config = json.loads((folder / "config.json").read_text())
    del config["text_config"]["tie_word_embeddings"]
    assert config["tie_word_embeddings"] is True
    (folder / "config.json").write_text(json.dumps(config))

    model = load_model(folder)
    assert "lm_head" not in model.language_model
    ids = prompt(40)
    assert_close_to_reference(ours(model, ids), reference_logits(folder, kind, ids))


@pytest.mark.parametrize("kind", ["dense", "next"])
def test_logits_match_transformers_on_2100_tokens(checkpoints, kind):
    folder = checkpoints[(kind, False)]
    ids = prompt(2100, seed=1)
    assert_close_to_reference(ours(load_model(folder), ids), reference_logits(folder, kind, ids))


@pytest.mark.parametrize("kind", KINDS)
def test_chunked_prefill_through_the_recurrent_state_equals_one_pass(checkpoints, kind):
    model = load_model(checkpoints[(kind, False)])
    ids = prompt(300, seed=2)
    one_pass = ours(model, ids)

    cache = model.make_cache()
    bounds = [0, 7, 8, 130, 300]  # uneven, with a single-token chunk
    chunks = [ours(model, ids[:, a:b], cache=cache) for a, b in zip(bounds, bounds[1:])]

    np.testing.assert_allclose(np.concatenate(chunks, axis=1), one_pass, rtol=0, atol=1e-5)
    assert all(c.offset == ids.shape[1] for c in cache)
    # The state carried something: the last chunk alone, from a fresh cache, is different.
    alone = ours(model, ids[:, 130:], cache=model.make_cache())
    assert np.abs(alone - one_pass[:, 130:]).max() > 1e-2


# -- the published configs -----------------------------------------------------------------------

PUBLISHED = sorted(FAMILY.glob("*/config.json")) if FAMILY.is_dir() else []


def mlx_lm_model(config: dict):
    """mlx-lm's own model for the config (not ours): an independent view of what gets built."""
    import importlib

    module = importlib.import_module(f"mlx_lm.models.{config['model_type']}")
    args = module.ModelArgs.from_dict(config)
    return module.Model(args)


@pytest.mark.skipif(not PUBLISHED, reason="shared qwen3.5-family fixtures are not available")
@pytest.mark.parametrize("path", PUBLISHED, ids=lambda p: p.parent.name)
def test_published_config_builds_and_model_shape_matches_the_model(path):
    config = json.loads(path.read_text(encoding="utf-8"))
    args = model_args(config)
    model = architecture(config).Model(args)  # parameters stay unevaluated: nothing allocated
    shape = ModelShape.from_config(config)

    layers = model.layers
    assert len(layers) == shape.num_layers
    assert tuple(i for i, layer in enumerate(layers) if not layer.is_linear) == shape.attention_layers
    assert shape.attention_layers and shape.linear_layers
    attention = layers[shape.attention_layers[0]].self_attn
    assert attention.head_dim == shape.head_dim
    assert attention.num_key_value_heads == shape.num_kv_heads
    assert attention.rope.dims == shape.rotary_dims
    linear = layers[shape.linear_layers[0]].linear_attn
    assert linear.conv_dim == shape.linear.conv_dim
    assert linear.conv_kernel_size == shape.linear.conv_kernel
    assert linear.num_v_heads == shape.linear.value_heads
    assert (linear.head_k_dim, linear.head_v_dim) == (
        shape.linear.key_head_dim, shape.linear.value_head_dim,
    )

    # mlx-lm's own build of the same config places its layers and rope identically.
    theirs = mlx_lm_model(config)
    assert [layer.is_linear for layer in theirs.layers] == [layer.is_linear for layer in layers]
    their_rope = theirs.layers[shape.attention_layers[0]].self_attn.rope
    assert their_rope.dims == shape.rotary_dims
    assert float(their_rope.base) == pytest.approx(shape.rope_theta)
    embed = model.model.embed_tokens.weight
    assert embed.shape == (shape.vocab_size, config.get("text_config", config)["hidden_size"])
