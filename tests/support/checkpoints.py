"""Small random-weight Qwen3 checkpoints in the exact Hugging Face layout, for tests.

``write_random_checkpoint`` writes what a real Qwen3 release holds (config.json with HF field
names, safetensors with HF tensor names, tokenizer files), so tests exercise the real loading
code, and transformers / mlx-lm can load the same folder for parity checks.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import mlx.core as mx
import numpy as np

from tests.support.tokenizers import write_qwen3_tokenizer, write_tiny_tokenizer

TokenizerKind = Literal["tiny", "qwen3", "qwen3-instruct-2507", "qwen3-thinking-2507"]

QWEN3_VOCAB_SIZE = 151936  # the real embedding size; the tokenizer uses ids < 151669
_QWEN3_VARIANTS = {
    "qwen3": "hybrid",
    "qwen3-instruct-2507": "instruct-2507",
    "qwen3-thinking-2507": "thinking-2507",
}
_DTYPES = {"float32": mx.float32, "bfloat16": mx.bfloat16, "float16": mx.float16}
_ADDED_TOKENS = 26  # Qwen3's added tokens follow the BPE vocabulary: <|endoftext|> first

TINY_DENSE = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 16,
    "intermediate_size": 128,
}
TINY_MOE = {
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 32,
    "norm_topk_prob": True,
    "decoder_sparse_step": 1,
    "mlp_only_layers": [],
}


def write_random_checkpoint(
    dst: str | Path,
    *,
    moe: bool = False,
    tokenizer: TokenizerKind | None = "tiny",
    rope_scaling: dict[str, Any] | None = None,
    seed: int = 0,
    dtype: str = "float32",
    shards: int = 1,
    embedding_std: float = 1.0,
    **config_overrides: Any,
) -> Path:
    """Write a tiny random Qwen3 (or Qwen3-MoE with ``moe=True``) checkpoint into ``dst``.

    ``config_overrides`` replace config.json fields (HF names, e.g. ``num_hidden_layers=3`` or
    ``tie_word_embeddings=False``). ``shards > 1`` writes model-0000N-of-0000M.safetensors and
    model.safetensors.index.json. ``tokenizer=None`` writes no tokenizer files.
    """
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    token_count = _write_tokenizer(dst, tokenizer)
    config = _config(
        moe=moe,
        token_count=token_count,
        qwen3_vocab=tokenizer in _QWEN3_VARIANTS,
        rope_scaling=rope_scaling,
        dtype=dtype,
        overrides=config_overrides,
    )
    (dst / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    tensors = random_hf_tensors(config, seed=seed, embedding_std=embedding_std)
    _write_safetensors(dst, {k: mx.array(v).astype(_DTYPES[dtype]) for k, v in tensors.items()}, shards)
    return dst


def _write_tokenizer(dst: Path, tokenizer: TokenizerKind | None) -> int | None:
    if tokenizer is None:
        return None
    if tokenizer == "tiny":
        return write_tiny_tokenizer(dst)
    if tokenizer in _QWEN3_VARIANTS:
        return write_qwen3_tokenizer(dst, _QWEN3_VARIANTS[tokenizer])
    raise ValueError(f"unknown tokenizer {tokenizer!r}")


def _config(
    *,
    moe: bool,
    token_count: int | None,
    qwen3_vocab: bool,
    rope_scaling: dict[str, Any] | None,
    dtype: str,
    overrides: dict[str, Any],
) -> dict[str, Any]:
    if dtype not in _DTYPES:
        raise ValueError(f"dtype must be one of {', '.join(_DTYPES)}")
    if qwen3_vocab:
        vocab_size = QWEN3_VOCAB_SIZE
    elif token_count is not None:
        vocab_size = 64 * math.ceil(token_count / 64)  # padded like real releases
    else:
        vocab_size = 512
    first_added = (token_count or vocab_size) - _ADDED_TOKENS
    config: dict[str, Any] = {
        "architectures": ["Qwen3MoeForCausalLM" if moe else "Qwen3ForCausalLM"],
        "model_type": "qwen3_moe" if moe else "qwen3",
        **TINY_DENSE,
        "hidden_act": "silu",
        "attention_bias": False,
        "attention_dropout": 0.0,
        "max_position_embeddings": 40960,
        "rms_norm_eps": 1e-6,
        "rope_theta": 1000000.0,
        "rope_scaling": rope_scaling,
        # Untied like Qwen3-8B and up: with a tied head, random weights mostly predict the
        # input token again (the residual stream is its embedding), a useless test model.
        "tie_word_embeddings": False,
        "vocab_size": vocab_size,
        "bos_token_id": first_added,  # <|endoftext|>
        "eos_token_id": first_added + 2,  # <|im_end|>
        "torch_dtype": dtype,
        "use_cache": True,
        "use_sliding_window": False,
        "sliding_window": None,
        "max_window_layers": 28,
    }
    if moe:
        config.update(TINY_MOE, output_router_logits=False, router_aux_loss_coef=0.001)
    config.update(overrides)
    return config


def random_hf_tensors(
    config: dict[str, Any], *, seed: int = 0, embedding_std: float = 1.0
) -> dict[str, np.ndarray]:
    """Random float32 tensors under Hugging Face's Qwen3 / Qwen3-MoE names for ``config``.

    Linear weights are scaled by 1/sqrt(fan_in) so activations keep their size through the
    layers and the logits are spread out (a meaningful argmax) rather than flat or exploding.
    """
    rng = np.random.default_rng(seed)
    hidden = config["hidden_size"]
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    head_dim = config.get("head_dim") or hidden // heads
    vocab = config["vocab_size"]
    moe = config["model_type"] == "qwen3_moe"

    def linear(out_dim: int, in_dim: int) -> np.ndarray:
        return rng.standard_normal((out_dim, in_dim), dtype=np.float32) / np.float32(math.sqrt(in_dim))

    def norm(dim: int) -> np.ndarray:
        return (1.0 + 0.1 * rng.standard_normal(dim, dtype=np.float32)).astype(np.float32)

    def mlp(prefix: str, inter: int) -> dict[str, np.ndarray]:
        return {
            f"{prefix}.gate_proj.weight": linear(inter, hidden),
            f"{prefix}.up_proj.weight": linear(inter, hidden),
            f"{prefix}.down_proj.weight": linear(hidden, inter),
        }

    tensors = {
        "model.embed_tokens.weight": embedding_std * rng.standard_normal((vocab, hidden), dtype=np.float32)
    }
    for i in range(config["num_hidden_layers"]):
        p = f"model.layers.{i}"
        tensors.update(
            {
                f"{p}.input_layernorm.weight": norm(hidden),
                f"{p}.post_attention_layernorm.weight": norm(hidden),
                f"{p}.self_attn.q_proj.weight": linear(heads * head_dim, hidden),
                f"{p}.self_attn.k_proj.weight": linear(kv_heads * head_dim, hidden),
                f"{p}.self_attn.v_proj.weight": linear(kv_heads * head_dim, hidden),
                f"{p}.self_attn.o_proj.weight": linear(hidden, heads * head_dim),
                f"{p}.self_attn.q_norm.weight": norm(head_dim),
                f"{p}.self_attn.k_norm.weight": norm(head_dim),
            }
        )
        sparse = (
            moe
            and i not in config.get("mlp_only_layers", [])
            and (i + 1) % config.get("decoder_sparse_step", 1) == 0
        )
        if sparse:
            tensors[f"{p}.mlp.gate.weight"] = linear(config["num_experts"], hidden)
            for e in range(config["num_experts"]):
                tensors.update(mlp(f"{p}.mlp.experts.{e}", config["moe_intermediate_size"]))
        else:
            tensors.update(mlp(f"{p}.mlp", config["intermediate_size"]))
    tensors["model.norm.weight"] = norm(hidden)
    if not config.get("tie_word_embeddings", False):
        tensors["lm_head.weight"] = linear(vocab, hidden)
    return tensors


def _write_safetensors(dst: Path, tensors: dict[str, mx.array], shards: int) -> None:
    metadata = {"format": "pt"}  # what transformers writes; it refuses files without a format
    if shards <= 1:
        mx.save_safetensors(str(dst / "model.safetensors"), tensors, metadata=metadata)
        return
    names = sorted(tensors)
    weight_map: dict[str, str] = {}
    for index in range(shards):
        file_name = f"model-{index + 1:05d}-of-{shards:05d}.safetensors"
        part = {name: tensors[name] for name in names[index::shards]}
        mx.save_safetensors(str(dst / file_name), part, metadata=metadata)
        weight_map.update(dict.fromkeys(part, file_name))
    index_data = {
        "metadata": {"total_size": sum(t.nbytes for t in tensors.values())},
        "weight_map": dict(sorted(weight_map.items())),
    }
    (dst / "model.safetensors.index.json").write_text(json.dumps(index_data, indent=2), encoding="utf-8")
