"""Checkpoint layouts of the hybrid architectures (Qwen3.5 dense / MoE, Qwen3-Next).

Folders that must load to the same logits: the full multimodal folder (vision tensors never
read), per-expert and fused MoE experts, mlx-community's layout as mlx-lm writes it, and our
4/8-bit ``convert`` output (loaded here and by mlx-lm). Folders that are wrong end in a
ModelLoadError that says what is wrong.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models.switch_layers import QuantizedSwitchLinear
from mlx_lm.utils import load_model as mlx_lm_load_model
from mlx_lm.utils import quantize_model, save_config, save_model

from mlx_backend.errors import ModelLoadError
from mlx_backend.loading.loader import load_model
from mlx_backend.loading.quantize import convert
from tests.support.load_errors import assert_load_error
from tests.support.paths import REPO_ROOT
from tests.support.hybrid_checkpoints import (
    hybrid_fixtures_available,
    write_248k_tokenizer,
    write_hybrid_checkpoint,
)

pytest.importorskip("torch")

KINDS = ["dense", "moe", "next"]
IDS = mx.array(np.random.RandomState(0).randint(0, 512, size=(1, 24)))
EXPERT_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("hybrid-loading")
    return {kind: write_hybrid_checkpoint(root / kind, kind, tokenizer=False, seed=3) for kind in KINDS}


@pytest.fixture(scope="module")
def fused(checkpoints, tmp_path_factory):
    """kind -> the MoE folders with experts fused as Qwen publishes them."""
    root = tmp_path_factory.mktemp("hybrid-fused")
    return {kind: fuse_experts(checkpoints[kind], root / kind) for kind in ("moe", "next")}


def logits(model, ids=IDS) -> np.ndarray:
    return np.array(model(ids).astype(mx.float32))


def copy_folder(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def config_of(folder: Path) -> dict:
    return json.loads((folder / "config.json").read_text())


def write_config(folder: Path, config: dict) -> None:
    (folder / "config.json").write_text(json.dumps(config, indent=2))


def edit_text_config(folder: Path, **changes) -> None:
    config = config_of(folder)
    (config.get("text_config") or config).update(changes)
    write_config(folder, config)


def rewrite_weights(folder: Path, edit) -> None:
    file = folder / "model.safetensors"
    weights = dict(mx.load(str(file)))
    edit(weights)
    mx.save_safetensors(str(file), weights, metadata={"format": "pt"})


def fuse_experts(src: Path, dst: Path) -> Path:
    """transformers' per-expert tensors -> ``experts.gate_up_proj`` [E, 2I, H] (gate rows
    first) and ``experts.down_proj`` [E, H, I], the layout of the published checkpoints."""
    dst = copy_folder(src, dst)
    weights = dict(mx.load(str(dst / "model.safetensors")))
    num_experts = (config_of(dst).get("text_config") or config_of(dst))["num_experts"]
    prefixes = sorted({k.split(".experts.")[0] for k in weights if ".mlp.experts." in k})
    assert prefixes
    for prefix in prefixes:
        stacked = {
            name: mx.stack([weights.pop(f"{prefix}.experts.{e}.{name}.weight") for e in range(num_experts)])
            for name in EXPERT_PROJECTIONS
        }
        weights[f"{prefix}.experts.gate_up_proj"] = mx.concatenate(
            [stacked["gate_proj"], stacked["up_proj"]], axis=1
        )
        weights[f"{prefix}.experts.down_proj"] = stacked["down_proj"]
    assert not any(".experts.0." in k for k in weights)
    mx.save_safetensors(str(dst / "model.safetensors"), weights, metadata={"format": "pt"})
    return dst


def mlx_lm_readable(folder: Path, dst: Path) -> Path:
    """The folder with a config mlx-lm's ModelArgs reads (its Qwen3-Next wants rope_theta and
    partial_rotary_factor at the top level; transformers 5 nests them in rope_parameters)."""
    dst = copy_folder(folder, dst)
    config = config_of(dst)
    if config["model_type"] == "qwen3_next":
        rope = config["rope_parameters"]
        config.update(rope_theta=rope["rope_theta"], partial_rotary_factor=rope["partial_rotary_factor"])
        write_config(dst, config)
    return dst


# -- the multimodal folder: vision tensors never read ---------------------------------------------


def test_vision_only_shard_is_never_opened(tmp_path, checkpoints):
    """A shard holding only model.visual.* tensors, made unreadable, does not stop the load."""
    src = checkpoints["dense"]
    expected = logits(load_model(src))
    folder = copy_folder(src, tmp_path / "sharded")
    weights = dict(mx.load(str(folder / "model.safetensors")))
    vision = {k: v for k, v in weights.items() if k.startswith("model.visual.")}
    text = {k: v for k, v in weights.items() if k not in vision}
    assert vision and text
    (folder / "model.safetensors").unlink()
    shards = {"model-00001-of-00002.safetensors": text, "model-00002-of-00002.safetensors": vision}
    for name, tensors in shards.items():
        mx.save_safetensors(str(folder / name), tensors, metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: n for n, t in shards.items() for k in t}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    np.testing.assert_array_equal(logits(load_model(folder)), expected)

    vision_shard = folder / "model-00002-of-00002.safetensors"
    vision_shard.write_bytes(vision_shard.read_bytes()[:10])  # truncated mid-header: unreadable
    np.testing.assert_array_equal(logits(load_model(folder)), expected)
    # The same damage to the text shard is reported, so the load really skipped the first.
    text_shard = folder / "model-00001-of-00002.safetensors"
    text_shard.write_bytes(text_shard.read_bytes()[:-100])
    with pytest.raises(ModelLoadError, match="model-00001-of-00002.safetensors is truncated"):
        load_model(folder)


def test_vision_tensors_beside_text_ones_are_not_read_into_memory(tmp_path, checkpoints):
    folder = copy_folder(checkpoints["dense"], tmp_path / "mixed")
    expected = logits(load_model(folder))
    big = mx.zeros((16, 1024, 1024))  # 64 MiB of "vision tower" in the same file as the text model
    rewrite_weights(folder, lambda w: w.update({"model.visual.blocks.0.attn.qkv.weight": big}))
    del big
    mx.clear_cache()

    # Peak memory is process-wide: measure the load in a fresh interpreter, where nothing else
    # (a worker thread left by an earlier test) can allocate meanwhile.
    script = (
        "import sys, mlx.core as mx\n"
        "from mlx_backend.loading.loader import load_model\n"
        "mx.reset_peak_memory()\n"
        "model = load_model(sys.argv[1])\n"
        "print(mx.get_peak_memory(), model.load_info.weights_bytes)\n"
    )
    run = subprocess.run([sys.executable, "-c", script, str(folder)], capture_output=True, text=True,
                         check=True, cwd=REPO_ROOT)
    peak, text_bytes = (int(v) for v in run.stdout.split())
    assert text_bytes < 4 * 2**20
    assert peak < 16 * 2**20, f"peak {peak / 2**20:.1f} MiB: the vision tensor was read"
    model = load_model(folder)
    np.testing.assert_array_equal(logits(model), expected)


# -- MoE experts: per-expert (transformers) and fused (published) ---------------------------------


@pytest.mark.parametrize("kind", ["moe", "next"])
def test_per_expert_and_fused_experts_load_to_identical_logits(checkpoints, fused, kind):
    per_expert = load_model(checkpoints[kind])
    from_fused = load_model(fused[kind])
    np.testing.assert_array_equal(logits(from_fused), logits(per_expert))


def test_mlx_lm_reads_the_fused_moe_folder_as_we_do(fused):
    # mlx-lm's Qwen3.5 MoE reads only the fused layout: it is the independent reference here.
    theirs, _ = mlx_lm_load_model(fused["moe"])
    np.testing.assert_allclose(logits(load_model(fused["moe"])), logits(theirs), rtol=0, atol=1e-5)


def test_per_expert_moe_is_what_mlx_lm_cannot_load(checkpoints):
    with pytest.raises(ValueError, match="experts"):
        mlx_lm_load_model(checkpoints["moe"])
    assert load_model(checkpoints["moe"]) is not None


# -- mlx-community's layout, written by mlx-lm itself ---------------------------------------------


@pytest.fixture(scope="module")
def mlx_community(checkpoints, fused, tmp_path_factory):
    """kind -> a folder mlx-lm wrote: its load_model of the release, then save_model/save_config."""
    root = tmp_path_factory.mktemp("mlx-community")
    folders = {}
    for kind in KINDS:
        source = mlx_lm_readable(fused[kind] if kind == "moe" else checkpoints[kind], root / f"{kind}-src")
        model, config = mlx_lm_load_model(source)
        folders[kind] = root / kind
        save_model(folders[kind], model)
        save_config(config, folders[kind] / "config.json")
    return folders


@pytest.mark.parametrize("kind", KINDS)
def test_mlx_community_layout_loads_to_the_same_logits(checkpoints, mlx_community, kind):
    folder = mlx_community[kind]
    stored = mx.load(str(next(folder.glob("*.safetensors"))))
    prefix = "language_model.model.layers.0." if kind != "next" else "model.layers.0."
    conv = stored[prefix + "linear_attn.conv1d.weight"]
    assert conv.shape[-1] == 1 and conv.shape[1] == 4  # [C, K, 1]: already sanitized by mlx-lm
    if kind != "dense":
        assert prefix + "mlp.switch_mlp.gate_proj.weight" in stored
        assert not any(".experts." in k for k in stored)
    hf = mx.load(str(checkpoints[kind] / "model.safetensors"))
    norm = prefix.replace("language_model.model", "model.language_model") + "input_layernorm.weight"
    np.testing.assert_allclose(np.array(stored[prefix + "input_layernorm.weight"]), np.array(hf[norm]) + 1)

    np.testing.assert_allclose(
        logits(load_model(folder)), logits(load_model(checkpoints[kind])), rtol=0, atol=1e-5
    )


@pytest.mark.parametrize("kind", KINDS)
def test_mlx_community_quantized_layout_written_by_mlx_lm_loads_identically(
    tmp_path, mlx_community, kind
):
    """What mlx_lm.convert -q writes (its load, quantize_model, save): ours reads it as mlx-lm."""
    model, config = mlx_lm_load_model(mlx_community[kind])
    model, config = quantize_model(model, config, group_size=64, bits=4)
    save_model(tmp_path, model)
    save_config(config, tmp_path / "config.json")

    ours = load_model(tmp_path)
    theirs, _ = mlx_lm_load_model(tmp_path)
    assert ours.load_info.bits == 4
    np.testing.assert_array_equal(logits(ours), logits(theirs))


# -- quantized: our convert, loaded here and by mlx-lm --------------------------------------------


@pytest.fixture(scope="module")
def with_side_files(checkpoints, tmp_path_factory):
    """The checkpoints with tokenizer files and a generation_config, for convert to carry over."""
    root = tmp_path_factory.mktemp("with-side-files")
    folders = {}
    for kind in KINDS:
        folders[kind] = copy_folder(checkpoints[kind], root / kind)
        if hybrid_fixtures_available():
            write_248k_tokenizer(folders[kind])
        (folders[kind] / "chat_template.jinja").write_text("{{ messages }}")
    return folders


@pytest.mark.parametrize("bits", [4, 8])
@pytest.mark.parametrize("kind", KINDS)
def test_convert_loads_identically_here_and_in_mlx_lm(tmp_path, with_side_files, kind, bits):
    src = with_side_files[kind]
    dst = convert(src, tmp_path / f"q{bits}", bits=bits, group_size=32)

    quantization = json.loads((dst / "config.json").read_text())["quantization"]
    assert {k: quantization[k] for k in ("bits", "group_size")} == {"bits": bits, "group_size": 32}
    overrides = {k: v for k, v in quantization.items() if isinstance(v, dict)}
    if kind == "dense":
        assert overrides == {}
    else:  # mlx-lm's quant_predicate: the router and the shared-expert gate at 8 bits
        layers = range(4)
        prefix = "language_model.model" if kind == "moe" else "model"
        assert overrides == {
            f"{prefix}.layers.{i}.mlp.{gate}": {"group_size": 64, "bits": 8}
            for i in layers
            for gate in ("gate", "shared_expert_gate")
        }
    for file in src.iterdir():
        if file.name not in ("config.json", "model.safetensors"):
            assert (dst / file.name).read_bytes() == file.read_bytes(), file.name
    assert (dst / "generation_config.json").is_file()

    ours = load_model(dst)
    theirs, _ = mlx_lm_load_model(dst)
    np.testing.assert_array_equal(logits(ours), logits(theirs))
    assert ours.load_info.bits == bits
    layer = ours.layers[0]
    assert layer.linear_attn.out_proj.bits == bits
    if kind != "dense":
        assert isinstance(layer.mlp.switch_mlp.up_proj, QuantizedSwitchLinear)
        assert layer.mlp.gate.bits == 8 and layer.mlp.shared_expert_gate.bits == 8
    # Quantized, yet close: 8-bit stays near the fp32 model.
    error = np.abs(logits(ours) - logits(load_model(src))).max()
    assert 1e-4 < error < (0.5 if bits == 8 else 4.0)


def test_bf16_convert_keeps_the_recurrent_decay_in_float32(tmp_path, checkpoints):
    """As mlx_lm.convert: A_log stays fp32 (the model's cast_predicate); mlx-lm agrees."""
    dst = convert(checkpoints["dense"], tmp_path / "q4", bits=4, group_size=32, dtype="bfloat16")
    stored = mx.load(str(dst / "model.safetensors"))
    a_log = [k for k in stored if k.endswith("A_log")]
    assert a_log and all(stored[k].dtype == mx.float32 for k in a_log)
    assert stored["language_model.model.norm.weight"].dtype == mx.bfloat16

    ours = load_model(dst)
    assert ours.layers[0].linear_attn.A_log.dtype == mx.float32
    theirs, _ = mlx_lm_load_model(dst)
    np.testing.assert_array_equal(logits(ours), logits(theirs))


# -- folders that must fail clearly ----------------------------------------------------------------


@pytest.mark.parametrize("kind", ["moe", "next"])
def test_missing_expert(tmp_path, checkpoints, kind):
    folder = copy_folder(checkpoints[kind], tmp_path / kind)
    prefix = "model.language_model" if kind == "moe" else "model"
    name = f"{prefix}.layers.2.mlp.experts.3.down_proj.weight"
    rewrite_weights(folder, lambda w: w.pop(name))
    assert_load_error(folder, "incomplete", "1 expert tensor(s)", name)


@pytest.mark.parametrize("kind", ["moe", "next"])
def test_config_with_more_experts_than_the_weights(tmp_path, checkpoints, kind):
    folder = copy_folder(checkpoints[kind], tmp_path / kind)
    edit_text_config(folder, num_experts=6)
    assert_load_error(folder, "incomplete", "experts.4.gate_proj.weight")


def test_fused_experts_of_the_wrong_count(tmp_path, fused):
    folder = copy_folder(fused["moe"], tmp_path / "moe")
    edit_text_config(folder, num_experts=6)
    assert_load_error(folder, "mlp.", "(4, 64) in the weights", "implies (6, 64)", "do not belong together")


def test_linear_attention_shape_that_disagrees_with_the_weights(tmp_path, checkpoints):
    folder = copy_folder(checkpoints["dense"], tmp_path / "dense")
    edit_text_config(folder, linear_value_head_dim=32)
    assert_load_error(folder, "linear_attn", "in the weights but config.json implies", "do not belong together")


@pytest.mark.parametrize("kind", KINDS)
def test_layer_types_that_disagree_with_full_attention_interval(tmp_path, checkpoints, kind):
    folder = copy_folder(checkpoints[kind], tmp_path / kind)
    edit_text_config(
        folder,
        layer_types=["full_attention", "linear_attention", "linear_attention", "linear_attention"],
    )
    assert_load_error(folder, "invalid settings", "layer_types", "every 4 layers")


def test_truncated_text_shard(tmp_path, checkpoints):
    folder = copy_folder(checkpoints["moe"], tmp_path / "moe")
    file = folder / "model.safetensors"
    data = file.read_bytes()
    file.write_bytes(data[: len(data) // 3])
    assert_load_error(folder, "model.safetensors is truncated", f"of {len(data):,} bytes")


def test_vision_weights_alone_are_not_a_model(tmp_path, checkpoints):
    folder = copy_folder(checkpoints["dense"], tmp_path / "dense")
    rewrite_weights(folder, lambda w: [w.pop(k) for k in list(w) if not k.startswith("model.visual.")])
    assert_load_error(folder, "missing", "tensor(s) the model needs")


def test_text_model_of_another_architecture(tmp_path, checkpoints):
    folder = copy_folder(checkpoints["next"], tmp_path / "next")
    config = config_of(folder)
    write_config(folder, {**config, "model_type": "qwen3_5", "text_config": config})
    assert_load_error(folder, "missing", "linear_attn.in_proj_a.weight", "belong to a different model")


def test_quantized_hybrid_whose_bits_do_not_match(tmp_path, checkpoints):
    folder = convert(checkpoints["moe"], tmp_path / "q4", bits=4, group_size=32)
    config = config_of(folder)
    config["quantization"]["bits"] = config["quantization_config"]["bits"] = 8
    write_config(folder, config)
    assert_load_error(folder, "says 8-bit", "packed as 4-bit", "do not belong together")


@pytest.mark.parametrize("kind", ["dense", "next"])
def test_convert_from_an_mlx_community_folder_equals_convert_from_the_release(
    tmp_path, checkpoints, mlx_community, kind
):
    from_release = load_model(convert(checkpoints[kind], tmp_path / "a", bits=4, group_size=32))
    converted = convert(mlx_community[kind], tmp_path / "b", bits=4, group_size=32)
    ours = load_model(converted)
    np.testing.assert_array_equal(logits(ours), logits(from_release))
    theirs, _ = mlx_lm_load_model(converted)
    np.testing.assert_array_equal(logits(ours), logits(theirs))


def test_quantized_folder_with_a_quantized_vision_tower_loads_its_text_model(tmp_path, checkpoints):
    """mlx-vlm's mlx-community folders keep a (quantized) vision_tower beside the text model."""
    folder = convert(checkpoints["moe"], tmp_path / "q4", bits=4, group_size=32)
    expected = logits(load_model(folder))
    shard = next(folder.glob("*.safetensors"))
    weights = dict(mx.load(str(shard)))
    weights.update({
        "vision_tower.blocks.0.attn.qkv.weight": mx.zeros((96, 4), dtype=mx.uint32),
        "vision_tower.blocks.0.attn.qkv.scales": mx.zeros((96, 1)),
        "vision_tower.blocks.0.attn.qkv.biases": mx.zeros((96, 1)),
    })
    mx.save_safetensors(str(shard), weights, metadata={"format": "mlx"})
    np.testing.assert_array_equal(logits(load_model(folder)), expected)


def test_cli_converts_a_multimodal_moe_release(tmp_path, fused, capsys):
    import argparse

    from mlx_backend.commands import convert as convert_command

    parser = argparse.ArgumentParser()
    convert_command.add_parser(parser.add_subparsers(dest="command", required=True))
    dst = tmp_path / "q4"
    args = parser.parse_args(["convert", str(fused["moe"]), str(dst), "--bits", "4", "--group-size", "32"])
    assert args.run(args) == 0
    assert f"Wrote {dst}: 4-bit" in capsys.readouterr().out

    stored = mx.load(str(next(dst.glob("*.safetensors"))))
    assert not any("visual" in k or "vision" in k for k in stored)  # the text model only
    ours = load_model(dst)
    theirs, _ = mlx_lm_load_model(dst)
    np.testing.assert_array_equal(logits(ours), logits(theirs))


def test_layer_types_of_the_wrong_length_are_refused():
    from mlx_backend.models.hybrid import check_layer_types

    with pytest.raises(ValueError, match="lists 3 layers but num_hidden_layers is 4"):
        check_layer_types({"num_hidden_layers": 4, "full_attention_interval": 4,
                           "layer_types": ["linear_attention"] * 3})
