"""Memory planner figures against hand-computed ones for real Qwen3 configs: the proof that
the lazily built model is measured the way the checkpoint stores it."""

from __future__ import annotations

import json
import os

import mlx.core as mx
import mlx.nn as nn
import pytest

from mlx_backend.errors import ModelLoadError
from mlx_backend.memory import device
from mlx_backend.loading.loader import load_model
from mlx_backend.memory.device import memory_budget, peak_memory_bytes, reset_peak_memory, wired_limit
from mlx_backend.memory.plan import plan_memory
from mlx_backend.memory.sizes import (
    count_parameters,
    estimate_kv_cache_bytes,
    estimate_weights_bytes,
    model_nbytes,
)
from tests.support.checkpoints import write_random_checkpoint

# The published config.json of Qwen/Qwen3-8B (fields that shape the weights).
QWEN3_8B = {
    "model_type": "qwen3",
    "hidden_size": 4096,
    "num_hidden_layers": 36,
    "num_attention_heads": 32,
    "num_key_value_heads": 8,
    "head_dim": 128,
    "intermediate_size": 12288,
    "vocab_size": 151936,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "max_position_embeddings": 40960,
    "torch_dtype": "bfloat16",
}
# The published config.json of Qwen/Qwen3-30B-A3B.
QWEN3_30B_A3B = {
    "model_type": "qwen3_moe",
    "hidden_size": 2048,
    "num_hidden_layers": 48,
    "num_attention_heads": 32,
    "num_key_value_heads": 4,
    "head_dim": 128,
    "intermediate_size": 6144,
    "moe_intermediate_size": 768,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
    "vocab_size": 151936,
    "tie_word_embeddings": False,
    "attention_bias": False,
    "max_position_embeddings": 40960,
    "torch_dtype": "bfloat16",
}


def four_bit(config, **overrides):
    return {**config, "quantization": {"group_size": 64, "bits": 4, **overrides}}


# Qwen3-8B by hand:
#   embeddings and untied lm_head: 2 x 151936 x 4096                      = 1,244,659,712
#   per layer: q 4096x4096 + k,v 1024x4096 each + o 4096x4096              =    41,943,040
#              mlp 3 x 4096 x 12288                                        =   150,994,944
#              norms 2 x 4096 + q_norm, k_norm 2 x 128                     =         8,448
#   36 layers = 36 x 192,946,432                                           = 6,946,071,552
#   final norm                                                             =         4,096
QWEN3_8B_PARAMS = 8_190_735_360
QWEN3_8B_SMALL = 36 * 8_448 + 4_096  # norms stay bf16 when quantized: 308,224


def test_qwen3_8b_parameters_and_bf16_weights():
    assert count_parameters(QWEN3_8B) == QWEN3_8B_PARAMS
    assert estimate_weights_bytes(QWEN3_8B) == 2 * QWEN3_8B_PARAMS  # 16.4 GB


def test_qwen3_8b_4bit_weights():
    matrices = QWEN3_8B_PARAMS - QWEN3_8B_SMALL  # 8,190,427,136 quantized values
    # 4 bits each, plus a bf16 scale and bias (4 bytes) per group of 64 values.
    expected = matrices // 2 + matrices // 64 * 4 + QWEN3_8B_SMALL * 2
    assert expected == 4_607_731_712  # ~4.6 GB, the size of mlx-community/Qwen3-8B-4bit
    assert estimate_weights_bytes(four_bit(QWEN3_8B)) == expected


def test_qwen3_8b_kv_cache_for_32k_tokens():
    # 36 layers x 8 KV heads x 128 dims x (K and V) = 73,728 values per token.
    assert estimate_kv_cache_bytes(QWEN3_8B, 32_768) == 73_728 * 2 * 32_768  # 4.83 GB in bf16
    # 8-bit: one byte per value plus a bf16 scale and bias per group of 64: 1.0625 bytes.
    assert estimate_kv_cache_bytes(QWEN3_8B, 32_768, kv_bits=8) == 78_336 * 32_768
    # 4-bit: half a byte plus the same group overhead: 0.5625 bytes.
    assert estimate_kv_cache_bytes(QWEN3_8B, 32_768, kv_bits=4) == 41_472 * 32_768
    # Allocation grows in steps of 256 positions, as mlx-lm's KVCache does.
    assert estimate_kv_cache_bytes(QWEN3_8B, 1) == 73_728 * 2 * 256


# Qwen3-30B-A3B by hand (every expert is resident, not just the 8 active ones):
#   embeddings and lm_head: 2 x 151936 x 2048                               =    622,329,856
#   per layer: attention q 4096x2048 + k,v 512x2048 each + o 2048x4096     =     18,874,368
#              router 128 x 2048                                            =        262,144
#              experts 128 x 3 x 2048 x 768                                 =    603,979,776
#              norms 2 x 2048 + 2 x 128                                     =          4,352
#   48 layers = 48 x 623,120,640                                            = 29,909,790,720
#   final norm                                                              =          2,048
QWEN3_30B_PARAMS = 30_532_122_624
QWEN3_30B_SMALL = 48 * 4_352 + 2_048  # 210,944
QWEN3_30B_ROUTERS = 48 * 262_144  # 12,582,912


def test_qwen3_30b_a3b_parameters_and_bf16_weights():
    assert count_parameters(QWEN3_30B_A3B) == QWEN3_30B_PARAMS
    assert estimate_weights_bytes(QWEN3_30B_A3B) == 2 * QWEN3_30B_PARAMS  # 61 GB


def test_qwen3_30b_a3b_4bit_weights_with_8bit_routers():
    # mlx-lm keeps MoE routers at 8 bits and records that per layer in config.json.
    routers = {f"model.layers.{i}.mlp.gate": {"group_size": 64, "bits": 8} for i in range(48)}
    config = four_bit(QWEN3_30B_A3B, **routers)
    others = QWEN3_30B_PARAMS - QWEN3_30B_SMALL - QWEN3_30B_ROUTERS  # 30,519,328,768
    expected = (
        others // 2 + others // 64 * 4
        + QWEN3_30B_ROUTERS + QWEN3_30B_ROUTERS // 64 * 4
        + QWEN3_30B_SMALL * 2
    )
    assert expected == 17_180_913_664  # ~17.2 GB, the size of mlx-community/Qwen3-30B-A3B-4bit
    assert estimate_weights_bytes(config) == expected
    # Without the router exception everything is 4-bit: 6.3 MB less.
    assert estimate_weights_bytes(four_bit(QWEN3_30B_A3B)) == expected - QWEN3_30B_ROUTERS // 2


def test_qwen3_30b_a3b_kv_cache():
    # 48 layers x 4 KV heads x 128 dims x 2 = 49,152 values per token, 2 bytes each.
    assert estimate_kv_cache_bytes(QWEN3_30B_A3B, 40_960) == 49_152 * 2 * 40_960


def test_plan_fits_with_numbers_in_the_message():
    config = four_bit(QWEN3_8B)
    plan = plan_memory(config, 8_192, budget_bytes=48 * 10**9)
    assert plan.verdict == "fits" and plan.fits
    assert plan.weights_bytes == 4_607_731_712
    assert plan.kv_cache_bytes == 73_728 * 2 * 8_192
    assert plan.total_bytes == plan.weights_bytes + plan.kv_cache_bytes + plan.overhead_bytes
    assert "4.6 GB" in plan.message and "8,192 tokens" in plan.message and "48.0 GB" in plan.message
    assert plan.suggestions == ()


def test_plan_tight_suggests_an_8bit_kv_cache():
    config = four_bit(QWEN3_8B)
    # 4.61 weights + 4.83 KV + 0.54 overhead = 9.97 GB against 11 GB: above 80 %, below 100 %.
    plan = plan_memory(config, 32_768, budget_bytes=11 * 10**9)
    assert plan.verdict == "tight"
    assert "8-bit KV cache needs 2.6 GB instead of 4.8 GB" in plan.message


def test_plan_wont_fit_and_says_what_would():
    plan = plan_memory(four_bit(QWEN3_8B), 32_768, budget_bytes=8 * 10**9)
    assert plan.verdict == "wont_fit" and not plan.fits
    assert "won't fit" in plan.message
    assert "8-bit KV cache" in plan.message
    assert any("context of up to" in tip for tip in plan.suggestions)


def test_plan_for_weights_beyond_the_budget_suggests_a_smaller_model():
    bf16 = plan_memory(QWEN3_30B_A3B, 4_096, budget_bytes=24 * 10**9)
    assert bf16.verdict == "wont_fit"
    assert "4-bit version or a smaller model" in bf16.message
    quantized = plan_memory(four_bit(QWEN3_30B_A3B), 4_096, budget_bytes=16 * 10**9)
    assert quantized.verdict == "wont_fit"
    assert "choose a smaller model" in quantized.message


def test_plan_reads_a_model_folder(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(QWEN3_8B))
    plan = plan_memory(tmp_path, 1_024, kv_bits=8, budget_bytes=64 * 10**9)
    assert plan.weights_bytes == 2 * QWEN3_8B_PARAMS
    assert plan.kv_bits == 8 and "at 8-bit" in plan.message


def test_plan_rejects_nonsense_arguments():
    with pytest.raises(ValueError):
        plan_memory(QWEN3_8B, 0)
    with pytest.raises(ValueError):
        plan_memory(QWEN3_8B, 1024, kv_bits=3)


def test_estimate_matches_what_mlx_actually_allocates_for_a_loaded_model(tmp_path):
    folder = write_random_checkpoint(tmp_path / "dense", tie_word_embeddings=False)
    config = json.loads((folder / "config.json").read_text())
    model = load_model(folder)
    assert model_nbytes(model) == estimate_weights_bytes(config)
    nn.quantize(model, group_size=64, bits=4)
    assert model_nbytes(model) == estimate_weights_bytes(four_bit(config))


def test_moe_estimate_matches_mlx_with_every_expert(tmp_path):
    folder = write_random_checkpoint(tmp_path / "moe", moe=True)
    config = json.loads((folder / "config.json").read_text())
    model = load_model(folder)
    assert model_nbytes(model) == estimate_weights_bytes(config)
    nn.quantize(model, group_size=32, bits=8)
    assert model_nbytes(model) == estimate_weights_bytes(
        {**config, "quantization": {"group_size": 32, "bits": 8}}
    )


def test_budget_off_apple_silicon_is_a_share_of_physical_memory(monkeypatch):
    monkeypatch.setattr(device, "_device_info", lambda: {"architecture": "x86_64"})
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    budget = memory_budget()
    assert budget.bytes == int(physical * 0.75)
    assert "physical memory" in budget.source


def test_budget_on_apple_silicon_is_metal_recommended_working_set(monkeypatch):
    monkeypatch.setattr(
        device, "_device_info", lambda: {"max_recommended_working_set_size": 22_906_503_168}
    )
    assert memory_budget().bytes == 22_906_503_168


def test_wired_limit_sets_and_restores_only_where_metal_recommends(monkeypatch):
    calls = []
    monkeypatch.setattr(mx, "set_wired_limit", lambda n: calls.append(n) or 7)
    monkeypatch.setattr(device, "_device_info", lambda: {})
    with wired_limit():
        pass
    assert calls == []  # CPU backend: nothing to wire
    monkeypatch.setattr(device, "_device_info", lambda: {"max_recommended_working_set_size": 1234})
    with wired_limit():
        assert calls == [1234]
    assert calls == [1234, 7]  # the previous limit is restored


def test_peak_memory_reading_follows_allocations():
    reset_peak_memory()
    big = mx.zeros((4 * 2**20,), dtype=mx.float32)  # 16 MiB
    mx.eval(big)
    assert peak_memory_bytes() >= big.nbytes


TINY_MOE = {
    "model_type": "qwen3_moe",
    "hidden_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "intermediate_size": 128,
    "moe_intermediate_size": 32,
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "vocab_size": 128,
    "torch_dtype": "bfloat16",
}


def test_router_override_without_a_mode_is_affine_like_the_loader_reads_it():
    # An mxfp4 folder keeps its 4 x 64 router as {"bits": 8, "group_size": 64}: affine 8-bit,
    # 256 packed bytes + 4 groups x bf16 scale and bias (16 bytes), not an mxfp8 layout.
    router = "model.layers.0.mlp.gate"

    def mxfp4(router_setting):
        quantization = {"group_size": 32, "bits": 4, "mode": "mxfp4", router: router_setting}
        return {**TINY_MOE, "quantization": quantization}

    unquantized_router = 4 * 64 * 2
    affine_8bit_router = 4 * 64 + 4 * 2 * 2
    assert estimate_weights_bytes(mxfp4(False)) - estimate_weights_bytes(
        mxfp4({"bits": 8, "group_size": 64})
    ) == unquantized_router - affine_8bit_router


def test_plan_reads_a_config_json_path_and_says_when_there_is_none(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps(QWEN3_8B))
    plan = plan_memory(tmp_path / "config.json", 1_024, budget_bytes=64 * 10**9)
    assert plan.weights_bytes == 2 * QWEN3_8B_PARAMS
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="has no config.json"):
        plan_memory(empty, 1_024)


# --- the 2026 hybrids: KV only on full-attention layers, a constant state on linear ones -------

from mlx_backend.memory.sizes import estimate_linear_state_bytes, kv_bytes_per_token  # noqa: E402
from tests.support.hybrid_checkpoints import FAMILY, hybrid_fixtures_available  # noqa: E402

needs_family = pytest.mark.skipif(not hybrid_fixtures_available(), reason="shared fixtures missing")


def published(name):
    return json.loads((FAMILY / name / "config.json").read_text())


@needs_family
def test_qwen3_5_9b_kv_and_linear_state_by_hand():
    config = published("Qwen3.5-9B")
    # 32 layers, every 4th full attention: 8 layers x 4 KV heads x 256 x (K, V) x bf16.
    assert kv_bytes_per_token(config) == 8 * 4 * 256 * 2 * 2 == 32768
    # 24 Gated DeltaNet layers: conv window 3 x (2 x 16 x 128 + 32 x 128) bf16
    # + recurrent state 32 heads x 128 x 128 float32.
    per_layer = 3 * (2 * 16 * 128 + 32 * 128) * 2 + 32 * 128 * 128 * 4
    assert estimate_linear_state_bytes(config) == 24 * per_layer == 51_511_296


@needs_family
def test_plan_counts_the_linear_state_once_whatever_the_context():
    config = published("Qwen3.5-27B")
    short, long = (plan_memory(config, n, budget_bytes=10**12) for n in (4096, 131072))
    assert short.linear_state_bytes == long.linear_state_bytes == estimate_linear_state_bytes(config) > 0
    for plan in (short, long):
        assert plan.total_bytes == (plan.weights_bytes + plan.kv_cache_bytes
                                    + plan.linear_state_bytes + plan.overhead_bytes)
        assert "linear-attention state" in plan.message
    # KV grows with the context, and only for the 16 full-attention layers of 64.
    assert long.kv_cache_bytes - short.kv_cache_bytes == (131072 - 4096) * 16 * 4 * 256 * 2 * 2
    # Qwen3 has no linear layers: nothing added, nothing said.
    qwen3 = plan_memory(QWEN3_8B, 4096, budget_bytes=10**12)
    assert qwen3.linear_state_bytes == 0 and "linear-attention" not in qwen3.message


@needs_family
def test_the_linear_state_can_tip_a_verdict():
    config = published("Qwen3.5-0.8B")
    plan = plan_memory(config, 256, budget_bytes=10**12)
    without_state = plan.weights_bytes + plan.kv_cache_bytes + plan.overhead_bytes
    budget = without_state + plan.linear_state_bytes // 2  # enough only if the state were free
    assert plan_memory(config, 256, budget_bytes=budget).verdict == "wont_fit"


@pytest.fixture(scope="module")
def hybrid_folders(tmp_path_factory):
    pytest.importorskip("torch")
    if not hybrid_fixtures_available():
        pytest.skip("shared fixtures missing")
    from tests.support.hybrid_checkpoints import write_hybrid_checkpoint

    root = tmp_path_factory.mktemp("hybrid-sizes")
    return {kind: write_hybrid_checkpoint(root / kind, kind=kind, tokenizer=False)
            for kind in ("dense", "moe", "next")}


@pytest.mark.parametrize("kind", ["dense", "moe", "next"])
def test_hybrid_estimate_is_the_loaded_text_model_without_vision_or_mtp(hybrid_folders, kind):
    from safetensors import safe_open

    folder = hybrid_folders[kind]
    config = json.loads((folder / "config.json").read_text())
    loaded = model_nbytes(load_model(folder))
    assert estimate_weights_bytes(config) == loaded
    # The checkpoint holds more (Qwen3.5's vision tower): none of it is counted or loaded.
    stored, skipped = 0, 0
    for file in folder.glob("*.safetensors"):
        with safe_open(str(file), "np") as f:
            for key in f.keys():
                n = f.get_tensor(key).nbytes
                stored += n
                skipped += n if (".visual." in f".{key}" or key.startswith("mtp.")) else 0
    if kind != "next":
        assert skipped > 0
    assert loaded == stored - skipped


@pytest.mark.parametrize("kind", ["moe", "next"])
def test_quantized_hybrid_moe_is_measured_with_its_8bit_routers(hybrid_folders, tmp_path, kind):
    from mlx_backend.loading.quantize import convert

    out = convert(hybrid_folders[kind], tmp_path / f"{kind}-4bit", bits=4)
    config = json.loads((out / "config.json").read_text())
    routers = [k for k, v in config["quantization"].items() if isinstance(v, dict) and v.get("bits") == 8]
    assert routers and all(k.endswith(("mlp.gate", "shared_expert_gate")) for k in routers)
    assert estimate_weights_bytes(config) == model_nbytes(load_model(out))
    # Without the 8-bit entries the same config would measure smaller: they are counted.
    four_only = {**config, "quantization": {"group_size": 64, "bits": 4}}
    assert estimate_weights_bytes(four_only) < estimate_weights_bytes(config)


@needs_family
@pytest.mark.parametrize("name", ["Qwen3.5-9B", "Qwen3.5-35B-A3B", "Qwen3-Next-80B-A3B-Instruct"])
def test_published_configs_measure_no_mtp_or_vision_weights(name):
    from mlx.utils import tree_flatten

    from mlx_backend.loading.loader import architecture, model_args

    config = published(name)
    if "text_config" in config:  # the Qwen3.5 releases carry an MTP layer and a vision tower
        assert config["text_config"]["mtp_num_hidden_layers"] == 1 and config["vision_config"]
    model = architecture(config).Model(model_args(config))  # lazy: nothing allocated
    paths = [path for path, _ in tree_flatten(model.parameters())]
    assert not [p for p in paths if "mtp" in p or "visual" in p or "vision" in p]
    assert count_parameters(config) == sum(v.size for _, v in tree_flatten(model.parameters()))
