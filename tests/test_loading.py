"""Loading checkpoint folders: layouts and dtypes that must work, and every broken folder
ending in a ModelLoadError with a message a user can act on."""

from __future__ import annotations

import json
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx.utils import tree_flatten
from mlx_lm.utils import load_model as mlx_lm_load_model
from mlx_lm.utils import quantize_model, save_model

from mlx_backend.errors import ModelLoadError
from mlx_backend.loading.loader import load, load_model
from mlx_backend.loading.quantize import convert
from tests.support.load_errors import assert_load_error
from tests.support.checkpoints import write_random_checkpoint
from tests.support.model_fixtures import tiny_checkpoint, tiny_moe_checkpoint  # noqa: F401

IDS = mx.array([[5, 17, 300, 42, 9, 77, 128, 3]])


def logits(model) -> np.ndarray:
    return np.array(model(IDS).astype(mx.float32))


def edit_config(folder: Path, **changes) -> None:
    path = folder / "config.json"
    config = json.loads(path.read_text())
    config.update(changes)
    path.write_text(json.dumps(config))


def rewrite_weights(folder: Path, edit) -> None:
    file = folder / "model.safetensors"
    weights = mx.load(str(file))
    edit(weights)
    mx.save_safetensors(str(file), weights, metadata={"format": "pt"})


# -- folders that load ---------------------------------------------------------------------------


def test_load_returns_model_tokenizer_and_info(tiny_checkpoint):
    model, tokenizer = load(tiny_checkpoint)
    info = model.load_info

    assert info.path == tiny_checkpoint
    assert info.model_type == "qwen3"
    assert info.dtype == "float32"
    assert info.quantization is None and info.bits is None
    assert info.context_length == 40960
    n_params = sum(v.size for _, v in tree_flatten(model.parameters()))
    assert info.num_parameters == n_params
    assert info.weights_bytes == 4 * n_params
    ids = tokenizer.encode("Hello, world!")
    assert ids and max(ids) < model.args.vocab_size
    assert logits(model).shape == (1, 8, model.args.vocab_size)


def test_sharded_checkpoint_loads_like_single_file(tmp_path):
    single = load_model(write_random_checkpoint(tmp_path / "single", seed=3))
    sharded_dir = write_random_checkpoint(tmp_path / "sharded", seed=3, shards=3)

    assert len(list(sharded_dir.glob("model-*-of-00003.safetensors"))) == 3
    np.testing.assert_array_equal(logits(load_model(sharded_dir)), logits(single))


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_weights_keep_the_checkpoint_dtype(tmp_path, dtype):
    model = load_model(write_random_checkpoint(tmp_path, dtype=dtype))
    dtypes = {v.dtype for _, v in tree_flatten(model.parameters())}

    assert dtypes == {getattr(mx, dtype)}
    assert model.load_info.dtype == dtype
    assert model(IDS).dtype == getattr(mx, dtype)


def test_stray_float32_tensors_follow_the_dominant_dtype(tmp_path):
    folder = write_random_checkpoint(tmp_path, dtype="bfloat16")
    rewrite_weights(folder, lambda w: w.update({"model.norm.weight": w["model.norm.weight"].astype(mx.float32)}))

    model = load_model(folder)
    assert model.model.norm.weight.dtype == mx.bfloat16
    assert model(IDS).dtype == mx.bfloat16


def test_tied_checkpoint_with_a_written_lm_head_uses_the_embeddings(tmp_path):
    folder = write_random_checkpoint(tmp_path, tie_word_embeddings=True)
    expected = logits(load_model(folder))
    rewrite_weights(folder, lambda w: w.update({"lm_head.weight": mx.zeros_like(w["model.embed_tokens.weight"])}))

    model = load_model(folder)
    assert "lm_head" not in model
    np.testing.assert_array_equal(logits(model), expected)


def test_old_exports_rotary_inv_freq_is_ignored(tmp_path):
    folder = write_random_checkpoint(tmp_path)
    expected = logits(load_model(folder))
    rewrite_weights(folder, lambda w: w.update({"model.layers.0.self_attn.rotary_emb.inv_freq": mx.ones((8,))}))
    np.testing.assert_array_equal(logits(load_model(folder)), expected)


def test_moe_loads_from_hf_per_expert_and_from_stacked_mlx_layout(tmp_path, tiny_moe_checkpoint):
    hf_layout = load_model(tiny_moe_checkpoint)
    switch = hf_layout.layers[0].mlp.switch_mlp
    assert switch.gate_proj.weight.shape == (4, 32, 64)  # experts x moe_intermediate x hidden
    assert switch.down_proj.weight.shape == (4, 64, 32)

    # An MLX checkpoint (as mlx-lm saves it) already holds the stacked switch_mlp tensors.
    stacked = tmp_path / "stacked"
    stacked.mkdir()
    (stacked / "config.json").write_text((tiny_moe_checkpoint / "config.json").read_text())
    mx.save_safetensors(str(stacked / "model.safetensors"), dict(tree_flatten(hf_layout.parameters())))
    assert not any(".experts." in k for k in mx.load(str(stacked / "model.safetensors")))

    np.testing.assert_array_equal(logits(load_model(stacked)), logits(hf_layout))


def test_quantized_folder_reports_its_quantization(tmp_path, tiny_checkpoint):
    model = load_model(convert(tiny_checkpoint, tmp_path / "q4", bits=4))
    assert model.load_info.quantization == {"bits": 4, "group_size": 64, "mode": "affine"}
    assert model.load_info.bits == 4
    assert model.load_info.weights_bytes < load_model(tiny_checkpoint).load_info.weights_bytes / 3


def test_mxfp4_moe_folder_with_an_affine_router_override_loads_like_mlx_lm(tmp_path, tiny_moe_checkpoint):
    # mlx-lm writes the 8-bit router override without a "mode": it means affine, not mxfp4.
    config = json.loads((tiny_moe_checkpoint / "config.json").read_text())
    model, quantized_config = quantize_model(
        load_model(tiny_moe_checkpoint), config, group_size=32, bits=4, mode="mxfp4"
    )
    assert quantized_config["quantization"]["model.layers.0.mlp.gate"] == {"group_size": 64, "bits": 8}
    folder = tmp_path / "mxfp4"
    folder.mkdir()
    save_model(folder, model)
    (folder / "config.json").write_text(json.dumps(quantized_config))

    ours = load_model(folder)
    assert ours.layers[0].mlp.gate.mode == "affine" and ours.layers[0].mlp.gate.bits == 8
    assert ours.layers[0].mlp.switch_mlp.up_proj.mode == "mxfp4"
    reference, _ = mlx_lm_load_model(folder)
    np.testing.assert_array_equal(logits(ours), logits(reference))


# -- folders that must fail clearly ----------------------------------------------------------------


def test_missing_folder(tmp_path):
    assert_load_error(tmp_path / "nope", "does not exist")


def test_empty_folder(tmp_path):
    assert_load_error(tmp_path, "is empty")


def test_missing_config(tmp_path):
    folder = write_random_checkpoint(tmp_path)
    (folder / "config.json").unlink()
    assert_load_error(folder, "has no config.json")


def test_unreadable_config(tmp_path):
    folder = write_random_checkpoint(tmp_path)
    (folder / "config.json").write_text("{not json")
    assert_load_error(folder, "config.json", "could not be read")


def test_unknown_model_type(tmp_path):
    folder = write_random_checkpoint(tmp_path)
    edit_config(folder, model_type="llama")
    assert_load_error(folder, "'llama'", "Qwen3.5", "qwen3_5_moe", "qwen3_next")


def test_config_missing_a_required_setting(tmp_path):
    folder = write_random_checkpoint(tmp_path)
    config = json.loads((folder / "config.json").read_text())
    del config["hidden_size"]
    (folder / "config.json").write_text(json.dumps(config))
    assert_load_error(folder, "missing required settings", "hidden_size")


def test_config_with_inconsistent_heads(tmp_path):
    folder = write_random_checkpoint(tmp_path)
    edit_config(folder, num_key_value_heads=3)
    assert_load_error(folder, "invalid settings", "must be a multiple of num_key_value_heads (3)")


def test_pickle_only_weights_are_refused(tmp_path):
    folder = write_random_checkpoint(tmp_path)
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    assert_load_error(folder, "pickle", "safetensors only")


def test_truncated_safetensors(tmp_path):
    folder = write_random_checkpoint(tmp_path)
    file = folder / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 2])
    assert_load_error(folder, "model.safetensors is truncated", f"of {len(data):,} bytes")


def test_missing_shard(tmp_path):
    folder = write_random_checkpoint(tmp_path, shards=3)
    (folder / "model-00002-of-00003.safetensors").unlink()
    assert_load_error(folder, "incomplete", "1 of 3 weight shards", "model-00002-of-00003.safetensors")


def test_missing_tensor(tmp_path):
    folder = write_random_checkpoint(tmp_path)
    rewrite_weights(folder, lambda w: w.pop("model.layers.1.mlp.up_proj.weight"))
    assert_load_error(folder, "missing 1 tensor", "model.layers.1.mlp.up_proj.weight")


def test_missing_expert(tmp_path):
    folder = write_random_checkpoint(tmp_path, moe=True)
    rewrite_weights(folder, lambda w: w.pop("model.layers.0.mlp.experts.3.down_proj.weight"))
    assert_load_error(folder, "missing", "model.layers.0.mlp.switch_mlp.down_proj.weight")


def test_unexpected_tensor(tmp_path):
    folder = write_random_checkpoint(tmp_path)
    edit_config(folder, num_hidden_layers=1)
    assert_load_error(folder, "no place for", "model.layers.1.")


def test_shape_mismatch_between_config_and_weights(tmp_path):
    folder = write_random_checkpoint(tmp_path)
    edit_config(folder, intermediate_size=96)
    assert_load_error(
        folder, "model.layers.0.mlp.down_proj.weight", "(64, 128) in the weights", "(64, 96)"
    )


def test_quantized_config_whose_bits_do_not_match_the_weights(tmp_path, tiny_checkpoint):
    folder = convert(tiny_checkpoint, tmp_path / "q4", bits=4)
    edit_config(folder, quantization={"group_size": 64, "bits": 8}, quantization_config={"group_size": 64, "bits": 8})
    assert_load_error(folder, "says 8-bit", "packed as 4-bit", "do not belong together")


def test_quantization_of_another_runtime_is_refused(tmp_path):
    folder = write_random_checkpoint(tmp_path)
    edit_config(folder, quantization_config={"quant_method": "awq", "bits": 4, "group_size": 128})
    assert_load_error(folder, "quantized with awq", "MLX quantized models")


def test_load_without_tokenizer_files_fails_clearly(tmp_path):
    folder = write_random_checkpoint(tmp_path, tokenizer=None)
    assert load_model(folder) is not None  # the weights alone are fine
    with pytest.raises(ModelLoadError, match="tokenizer"):
        load(folder)
