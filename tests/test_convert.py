"""Quantizing checkpoints: the written folder loads identically here and in mlx-lm, 8-bit stays
faithful to the original, and bad requests fail clearly."""

from __future__ import annotations

import argparse
import json

import mlx.core as mx
import mlx.nn as nn
import numpy as np
import pytest
from mlx_lm import load as mlx_lm_load
from mlx_lm.generate import generate_step
from mlx_lm.models.switch_layers import QuantizedSwitchLinear
from mlx_lm.utils import load_model as mlx_lm_load_model

from mlx_backend.commands import convert as convert_command
from mlx_backend.errors import ModelLoadError
from mlx_backend.loading.loader import load_model
from mlx_backend.loading.quantize import ConversionError, convert
from tests.support.checkpoints import write_random_checkpoint
from tests.support.model_fixtures import tiny_checkpoint  # noqa: F401

IDS = mx.array([[5, 17, 300, 42, 9, 77, 128, 3, 250, 61]])


def logits(model, ids=IDS) -> np.ndarray:
    return np.array(model(ids).astype(mx.float32))


@pytest.mark.parametrize("bits", [4, 8])
def test_dense_conversion_loads_identically_here_and_in_mlx_lm(tmp_path, tiny_checkpoint, bits):
    dst = convert(tiny_checkpoint, tmp_path / f"q{bits}", bits=bits)

    config = json.loads((dst / "config.json").read_text())
    assert config["quantization"] == {"group_size": 64, "bits": bits, "mode": "affine"}
    assert config["quantization_config"] == config["quantization"]
    for name in ("tokenizer_config.json", "vocab.json", "merges.txt"):
        assert (dst / name).read_bytes() == (tiny_checkpoint / name).read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"q{bits}"]  # no staging folder left

    ours = load_model(dst)
    theirs, _ = mlx_lm_load_model(dst)
    assert isinstance(ours.layers[0].self_attn.q_proj, nn.QuantizedLinear)
    assert ours.layers[0].self_attn.q_proj.bits == bits
    np.testing.assert_array_equal(logits(ours), logits(theirs))
    # Quantization changed the numbers (these are not the original weights).
    assert np.abs(logits(ours) - logits(load_model(tiny_checkpoint))).max() > 1e-3


def test_mlx_lm_loads_the_converted_folder_with_its_tokenizer(tmp_path, tiny_checkpoint):
    from mlx_backend.text.tokenizer import Qwen3Tokenizer

    dst = convert(tiny_checkpoint, tmp_path / "q4", bits=4)
    model, tokenizer = mlx_lm_load(str(dst))
    text = "Hello, world! The quick brown fox."
    assert tokenizer.encode(text) == Qwen3Tokenizer.from_folder(dst).encode(text)
    np.testing.assert_array_equal(logits(model), logits(load_model(dst)))


def greedy(model, prompt: mx.array, steps: int) -> list[int]:
    return [int(token) for token, _ in generate_step(prompt, model, max_tokens=steps)]


def test_8bit_follows_the_bf16_model_greedily(tmp_path):
    """8-bit changes every logit a little but none of the first 8 greedy choices."""
    src = write_random_checkpoint(tmp_path / "bf16", dtype="bfloat16", seed=11)
    original = load_model(src)
    quantized = load_model(convert(src, tmp_path / "q8", bits=8))
    prompt = IDS[0]

    tokens = greedy(original, prompt, 8)
    assert greedy(quantized, prompt, 8) == tokens

    # Teacher-forced over those 8 steps: different numbers, same argmax at every step.
    sequence = mx.concatenate([prompt, mx.array(tokens[:-1])])[None]
    before = logits(original, sequence)[0, -8:]
    after = logits(quantized, sequence)[0, -8:]
    assert (np.abs(after - before).max(axis=-1) > 1e-2).all()
    assert list(after.argmax(-1)) == list(before.argmax(-1)) == tokens
    assert len(set(tokens)) > 2  # a real continuation, not one token repeated


@pytest.mark.parametrize("bits", [4, 8])
def test_moe_conversion_quantizes_experts_and_keeps_the_router_at_8_bits(tmp_path, bits):
    # fp32 source: MLX's CPU gather_mm (unquantized experts) only runs in float32.
    src = write_random_checkpoint(tmp_path / "moe", moe=True, moe_intermediate_size=64, seed=12)
    dst = convert(src, tmp_path / f"q{bits}", bits=bits)

    config = json.loads((dst / "config.json").read_text())
    assert config["quantization"]["bits"] == bits
    assert config["quantization"]["model.layers.0.mlp.gate"] == {"group_size": 64, "bits": 8}

    ours = load_model(dst)
    block = ours.layers[0].mlp
    assert isinstance(block.switch_mlp.gate_proj, QuantizedSwitchLinear)
    assert block.switch_mlp.gate_proj.bits == bits
    assert block.gate.bits == 8
    theirs, _ = mlx_lm_load_model(dst)
    np.testing.assert_array_equal(logits(ours), logits(theirs))


def test_layers_not_divisible_by_the_group_size_stay_unquantized(tmp_path):
    # moe_intermediate_size 32 < group size 64: the experts' down projection cannot be grouped.
    src = write_random_checkpoint(tmp_path / "moe", moe=True, seed=13)
    dst = convert(src, tmp_path / "q4", bits=4)
    block = load_model(dst).layers[0].mlp.switch_mlp
    assert isinstance(block.gate_proj, QuantizedSwitchLinear)
    assert not isinstance(block.down_proj, QuantizedSwitchLinear)
    theirs, _ = mlx_lm_load_model(dst)
    np.testing.assert_array_equal(logits(load_model(dst)), logits(theirs))


def test_dtype_option_sets_the_unquantized_dtype(tmp_path, tiny_checkpoint):
    dst = convert(tiny_checkpoint, tmp_path / "q4", bits=4, dtype="bfloat16")
    model = load_model(dst)
    assert model.load_info.dtype == "bfloat16"
    assert model.model.norm.weight.dtype == mx.bfloat16
    assert model.layers[0].self_attn.q_proj.scales.dtype == mx.bfloat16


def test_refuses_a_non_empty_destination(tmp_path, tiny_checkpoint):
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    with pytest.raises(ConversionError, match="already exists and is not empty"):
        convert(tiny_checkpoint, dst, bits=4)
    assert (dst / "keep.txt").read_text() == "mine"


def test_refuses_an_already_quantized_source(tmp_path, tiny_checkpoint):
    q4 = convert(tiny_checkpoint, tmp_path / "q4", bits=4)
    with pytest.raises(ConversionError, match="already quantized"):
        convert(q4, tmp_path / "q8", bits=8)
    assert not (tmp_path / "q8").exists()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"bits": 7}, "Cannot quantize to 7 bits"), ({"bits": 4, "group_size": 48}, "Group size 48")],
)
def test_refuses_unsupported_settings(tmp_path, tiny_checkpoint, kwargs, message):
    with pytest.raises(ConversionError, match=message):
        convert(tiny_checkpoint, tmp_path / "out", **kwargs)


def test_missing_source_is_a_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        convert(tmp_path / "missing", tmp_path / "out", bits=4)


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="qwen-desk")
    convert_command.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.run(args)


def test_cli_converts(tmp_path, tiny_checkpoint, capsys):
    dst = tmp_path / "q8"
    assert run_cli(["convert", str(tiny_checkpoint), str(dst), "--bits", "8", "--group-size", "32"]) == 0
    assert f"Wrote {dst}: 8-bit" in capsys.readouterr().out
    assert load_model(dst).load_info.quantization == {"bits": 8, "group_size": 32, "mode": "affine"}


def test_cli_only_offers_4_and_8_bits(tmp_path, tiny_checkpoint, capsys):
    with pytest.raises(SystemExit):
        run_cli(["convert", str(tiny_checkpoint), str(tmp_path / "out"), "--bits", "3"])
    assert "invalid choice: 3" in capsys.readouterr().err
