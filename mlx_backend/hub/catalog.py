"""The curated list of Qwen models the app offers, with what each needs in memory.

Each entry carries a ``config`` that mirrors the mlx-community release's config.json (dimensions,
quantization), so the memory planner can judge it before anything is downloaded. Sizes are the
planner's estimate of the resident weights, within a few percent of the files on disk.
No Qt here: the model manager, the CLI and tests all read it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal, Mapping, Optional

from mlx_backend.memory.device import memory_budget
from mlx_backend.memory.plan import MemoryPlan, plan_memory
from mlx_backend.memory.sizes import estimate_weights_bytes

ThinkingMode = Literal["hybrid", "always", "never"]
Architecture = Literal["dense", "moe"]

# The context the badge is judged at: a long chat, not a book. The planner's message says more.
PLANNING_CONTEXT_TOKENS = 8192
QWEN3_VOCAB = 151936
GROUP_SIZE = 64


# Memory sizes Apple sells Macs with, in GB (for "For Macs with N GB or more").
MAC_MEMORY_SIZES_GB = (8, 16, 18, 24, 32, 36, 48, 64, 96, 128, 192, 256, 512)


@dataclass(frozen=True)
class CatalogModel:
    repo_id: str
    family: str  # "Qwen3-8B", "Qwen3-30B-A3B-Instruct-2507", ...
    bits: int
    architecture: Architecture
    parameters_label: str  # "8B", "30B total, 3B active"
    context_length: int  # tokens the model supports natively
    thinking_mode: ThinkingMode
    config: Mapping[str, Any]
    description: str
    large_mac: bool = False  # only for Macs with lots of memory (128 GB and more)

    def smallest_mac_gb(self) -> Optional[int]:
        """The smallest Mac memory size (GB) on which this model fits comfortably, or None."""
        for gb in MAC_MEMORY_SIZES_GB:
            # Metal's working set is about three quarters of a Mac's memory.
            if self.plan(budget_bytes=int(gb * 2**30 * 0.75)).verdict == "fits":
                return gb
        return None

    @property
    def display_name(self) -> str:
        return f"{self.family} \u00b7 {self.bits}-bit"

    @property
    def size_bytes(self) -> int:
        return estimate_weights_bytes(self.config)

    def plan(self, *, budget_bytes: Optional[int] = None, context_tokens: int = PLANNING_CONTEXT_TOKENS) -> MemoryPlan:
        return plan_memory(self.config, context_tokens, budget_bytes=budget_bytes)


@dataclass(frozen=True)
class _Family:
    name: str
    architecture: Architecture
    parameters_label: str
    context_length: int
    thinking_mode: ThinkingMode
    dims: Mapping[str, Any]
    description: str
    large_mac: bool = False


def _dense(hidden: int, intermediate: int, layers: int, heads: int, tie: bool) -> dict[str, Any]:
    return {
        "model_type": "qwen3",
        "architectures": ["Qwen3ForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "tie_word_embeddings": tie,
    }


def _moe(hidden: int, intermediate: int, moe_intermediate: int, layers: int, heads: int) -> dict[str, Any]:
    return {
        "model_type": "qwen3_moe",
        "architectures": ["Qwen3MoeForCausalLM"],
        "hidden_size": hidden,
        "intermediate_size": intermediate,
        "moe_intermediate_size": moe_intermediate,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": 4,
        "head_dim": 128,
        "num_experts": 128,
        "num_experts_per_tok": 8,
        "decoder_sparse_step": 1,
        "mlp_only_layers": [],
        "norm_topk_prob": True,
        "tie_word_embeddings": False,
    }


# Published Qwen3 dimensions (Hugging Face config.json of each release).
_ORIGINAL_CONTEXT = 32768  # native; 131,072 with YaRN on 4B and up
_2507_CONTEXT = 262144
_FAMILIES: tuple[_Family, ...] = (
    _Family("Qwen3-0.6B", "dense", "0.6B", _ORIGINAL_CONTEXT, "hybrid",
            {**_dense(1024, 3072, 28, 16, True), "rope_theta": 1e6, "max_position_embeddings": 40960},
            "Tiny and very fast; fine for quick rewrites and tests."),
    _Family("Qwen3-1.7B", "dense", "1.7B", _ORIGINAL_CONTEXT, "hybrid",
            {**_dense(2048, 6144, 28, 16, True), "rope_theta": 1e6, "max_position_embeddings": 40960},
            "Small and fast, with a thinking mode."),
    _Family("Qwen3-4B", "dense", "4B", _ORIGINAL_CONTEXT, "hybrid",
            {**_dense(2560, 9728, 36, 32, True), "rope_theta": 1e6, "max_position_embeddings": 40960},
            "Good all-rounder for 8 GB Macs; thinking on or off."),
    _Family("Qwen3-8B", "dense", "8B", _ORIGINAL_CONTEXT, "hybrid",
            {**_dense(4096, 12288, 36, 32, False), "rope_theta": 1e6, "max_position_embeddings": 40960},
            "Strong everyday model for 16 GB Macs; thinking on or off."),
    _Family("Qwen3-14B", "dense", "14B", _ORIGINAL_CONTEXT, "hybrid",
            {**_dense(5120, 17408, 40, 40, False), "rope_theta": 1e6, "max_position_embeddings": 40960},
            "Better reasoning; wants 16 GB or more."),
    _Family("Qwen3-32B", "dense", "32B", _ORIGINAL_CONTEXT, "hybrid",
            {**_dense(5120, 25600, 64, 64, False), "rope_theta": 1e6, "max_position_embeddings": 40960},
            "The largest dense Qwen3; wants 32 GB or more."),
    _Family("Qwen3-30B-A3B", "moe", "30B total, 3B active", _ORIGINAL_CONTEXT, "hybrid",
            {**_moe(2048, 6144, 768, 48, 32), "rope_theta": 1e6, "max_position_embeddings": 40960},
            "Mixture of experts: 30B quality at the speed of a 3B model."),
    _Family("Qwen3-235B-A22B", "moe", "235B total, 22B active", _ORIGINAL_CONTEXT, "hybrid",
            {**_moe(4096, 12288, 1536, 94, 64), "rope_theta": 1e6, "max_position_embeddings": 40960},
            "Flagship mixture of experts; needs a Mac with 128 GB or more."),
    _Family("Qwen3-4B-Instruct-2507", "dense", "4B", _2507_CONTEXT, "never",
            {**_dense(2560, 9728, 36, 32, True), "rope_theta": 5e6, "max_position_embeddings": 262144},
            "July 2025 update: answers directly (no thinking)."),
    _Family("Qwen3-4B-Thinking-2507", "dense", "4B", _2507_CONTEXT, "always",
            {**_dense(2560, 9728, 36, 32, True), "rope_theta": 5e6, "max_position_embeddings": 262144},
            "July 2025 update: always thinks first."),
    _Family("Qwen3-30B-A3B-Instruct-2507", "moe", "30B total, 3B active", _2507_CONTEXT, "never",
            {**_moe(2048, 6144, 768, 48, 32), "rope_theta": 1e7, "max_position_embeddings": 262144},
            "July 2025 update of the 30B MoE: fast direct answers."),
    _Family("Qwen3-30B-A3B-Thinking-2507", "moe", "30B total, 3B active", _2507_CONTEXT, "always",
            {**_moe(2048, 6144, 768, 48, 32), "rope_theta": 1e7, "max_position_embeddings": 262144},
            "July 2025 update of the 30B MoE: always thinks first."),
)


# --- The 2026 hybrids: Gated DeltaNet x3 + full attention, head_dim 256, partial rotary 0.25 ---
_HYBRID_CONTEXT = 262144
_VOCAB_248K = 248320


def _hybrid_text(hidden: int, layers: int, heads: int, kv_heads: int, value_heads: int) -> dict[str, Any]:
    return {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": heads,
        "num_key_value_heads": kv_heads,
        "head_dim": 256,
        "linear_num_key_heads": 16,
        "linear_num_value_heads": value_heads,
        "linear_key_head_dim": 128,
        "linear_value_head_dim": 128,
        "linear_conv_kernel_dim": 4,
        "full_attention_interval": 4,
        "max_position_embeddings": _HYBRID_CONTEXT,
        "rms_norm_eps": 1e-6,
        "attn_output_gate": True,
        "dtype": "bfloat16",
    }


# As the Qwen3.5 releases write it (mRoPE sections only matter for images).
_QWEN3_5_ROPE = {"mrope_interleaved": True, "mrope_section": [11, 11, 10], "rope_type": "default",
                 "rope_theta": 10000000, "partial_rotary_factor": 0.25}


def _qwen3_5(hidden: int, intermediate: int, layers: int, heads: int, kv_heads: int,
             value_heads: int, tie: bool) -> dict[str, Any]:
    text = {**_hybrid_text(hidden, layers, heads, kv_heads, value_heads),
            "model_type": "qwen3_5_text", "intermediate_size": intermediate,
            "rope_parameters": dict(_QWEN3_5_ROPE),
            "vocab_size": _VOCAB_248K, "tie_word_embeddings": tie}
    # The release is multimodal; its vision tower and MTP layer are not loaded, so not sized.
    return {"model_type": "qwen3_5", "architectures": ["Qwen3_5ForConditionalGeneration"],
            "tie_word_embeddings": tie, "text_config": text}


def _qwen3_5_moe(hidden: int, layers: int, heads: int, kv_heads: int, value_heads: int,
                 experts: int, top_k: int, expert_intermediate: int) -> dict[str, Any]:
    text = {**_hybrid_text(hidden, layers, heads, kv_heads, value_heads),
            "model_type": "qwen3_5_moe_text", "num_experts": experts, "num_experts_per_tok": top_k,
            "rope_parameters": dict(_QWEN3_5_ROPE),
            "moe_intermediate_size": expert_intermediate,
            "shared_expert_intermediate_size": expert_intermediate,
            "vocab_size": _VOCAB_248K, "tie_word_embeddings": False}
    return {"model_type": "qwen3_5_moe", "architectures": ["Qwen3_5MoeForConditionalGeneration"],
            "tie_word_embeddings": False, "text_config": text}


# Qwen3-Next-80B-A3B-Instruct's published config.json (flat, Qwen3 vocabulary, 512 experts top-10).
_QWEN3_NEXT = {
    **_hybrid_text(2048, 48, 16, 2, 32),
    "model_type": "qwen3_next", "architectures": ["Qwen3NextForCausalLM"],
    "intermediate_size": 5120, "moe_intermediate_size": 512, "shared_expert_intermediate_size": 512,
    "num_experts": 512, "num_experts_per_tok": 10, "decoder_sparse_step": 1, "mlp_only_layers": [],
    "norm_topk_prob": True, "vocab_size": QWEN3_VOCAB, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "rope_theta": 10000000, "partial_rotary_factor": 0.25, "rope_scaling": None,
}
_QWEN3_5_27B = _qwen3_5(5120, 17408, 64, 24, 4, 48, False)
_QWEN3_5_35B_A3B = _qwen3_5_moe(2048, 40, 16, 2, 32, 256, 8, 512)

# Published config.json values (shared/fixtures/qwen3.5-family) where we have the file:
# Qwen3.5 0.8B-35B-A3B, Qwen3.6-27B, Qwen3.8-27B (identical to 3.6-27B), Qwen3-Next Instruct.
# Derived, not read from a file (say so if a badge looks wrong):
# - Qwen3.6-35B-A3B: the Qwen3.5-35B-A3B dimensions (3.6-27B kept 3.5-27B's exactly).
# - Qwen3-Next-80B-A3B-Thinking: the Instruct config (same release, same architecture card).
# - Qwen3.5-122B-A10B: hidden 3072, 48 layers, 32 heads / 2 KV, 64 linear value heads,
#   256 experts top-8 of 1024, as we recall the published card; not checked against its
#   config.json. Measured lazily that is 122.0B total, about 10B active, matching the name.
_HYBRID_FAMILIES: tuple[_Family, ...] = (
    _Family("Qwen3.5-0.8B", "dense", "0.8B", _HYBRID_CONTEXT, "hybrid",
            _qwen3_5(1024, 3584, 24, 8, 2, 16, True),
            "Tiny and fast: quick rewrites on any Mac; answers directly by default."),
    _Family("Qwen3.5-2B", "dense", "2B", _HYBRID_CONTEXT, "hybrid",
            _qwen3_5(2048, 6144, 24, 8, 2, 16, True),
            "Small and fast, thinking on or off."),
    _Family("Qwen3.5-4B", "dense", "4B", _HYBRID_CONTEXT, "hybrid",
            _qwen3_5(2560, 9216, 32, 16, 4, 32, True),
            "All-rounder for 8 GB Macs; thinking on or off."),
    _Family("Qwen3.5-9B", "dense", "9B", _HYBRID_CONTEXT, "hybrid",
            _qwen3_5(4096, 12288, 32, 16, 4, 32, False),
            "Everyday model for 16 GB Macs; thinking on or off."),
    _Family("Qwen3.5-27B", "dense", "27B", _HYBRID_CONTEXT, "hybrid", _QWEN3_5_27B,
            "2026 dense 27B: strong reasoning; wants 32 GB or more."),
    _Family("Qwen3.5-35B-A3B", "moe", "35B total, 3B active", _HYBRID_CONTEXT, "hybrid",
            _QWEN3_5_35B_A3B,
            "2026 mixture of experts: 35B quality at the speed of a 3B model."),
    _Family("Qwen3.5-122B-A10B", "moe", "122B total, 10B active", _HYBRID_CONTEXT, "hybrid",
            _qwen3_5_moe(3072, 48, 32, 2, 64, 256, 8, 1024),
            "Large mixture of experts for Macs with lots of memory.", large_mac=True),
    _Family("Qwen3.6-27B", "dense", "27B", _HYBRID_CONTEXT, "hybrid", _QWEN3_5_27B,
            "April 2026 update of the 27B; can keep its reasoning across turns."),
    _Family("Qwen3.6-35B-A3B", "moe", "35B total, 3B active", _HYBRID_CONTEXT, "hybrid",
            _QWEN3_5_35B_A3B,
            "April 2026 update of the 35B MoE: fast, keeps reasoning across turns if asked."),
    _Family("Qwen3.8-27B", "dense", "27B", _HYBRID_CONTEXT, "hybrid", _QWEN3_5_27B,
            "August 2026 27B with a reasoning-effort setting; wants 32 GB or more."),
    _Family("Qwen3-Next-80B-A3B-Instruct", "moe", "80B total, 3B active", _HYBRID_CONTEXT, "never",
            _QWEN3_NEXT, "Hybrid-attention 80B MoE (Sept 2025): direct answers."),
    _Family("Qwen3-Next-80B-A3B-Thinking", "moe", "80B total, 3B active", _HYBRID_CONTEXT, "always",
            _QWEN3_NEXT, "Hybrid-attention 80B MoE (Sept 2025): always thinks first."),
)
# The model manager lists the catalog in this order: what people download now comes first.
_FAMILIES = _HYBRID_FAMILIES + _FAMILIES


def _quantized_config(family: _Family, bits: int) -> dict[str, Any]:
    quantization: dict[str, Any] = {"group_size": GROUP_SIZE, "bits": bits}
    if family.architecture == "moe":
        # mlx-lm keeps MoE routers (and the hybrids' shared-expert gates) at 8 bits whatever the
        # rest (the models' quant_predicate), and writes them under the module paths.
        for path in _router_paths(family.dims):
            quantization[path] = {"group_size": GROUP_SIZE, "bits": 8}
    if "text_config" in family.dims:
        return {**family.dims, "quantization": quantization}
    return {
        "vocab_size": QWEN3_VOCAB,
        "torch_dtype": "bfloat16",
        "rms_norm_eps": 1e-6,
        **family.dims,
        "quantization": quantization,
    }


def _router_paths(dims: Mapping[str, Any]) -> list[str]:
    text = dims.get("text_config", dims)
    layers = range(int(text["num_hidden_layers"]))
    if dims["model_type"] == "qwen3_moe":
        return [f"model.layers.{i}.mlp.gate" for i in layers]
    prefix = "language_model.model" if "text_config" in dims else "model"
    return [f"{prefix}.layers.{i}.mlp.{gate}" for i in layers for gate in ("gate", "shared_expert_gate")]


CATALOG: tuple[CatalogModel, ...] = tuple(
    CatalogModel(
        repo_id=f"mlx-community/{family.name}-{bits}bit",
        family=family.name,
        bits=bits,
        architecture=family.architecture,
        parameters_label=family.parameters_label,
        context_length=family.context_length,
        thinking_mode=family.thinking_mode,
        config=_quantized_config(family, bits),
        description=family.description,
        large_mac=family.large_mac,
    )
    for family in _FAMILIES
    for bits in (4, 8)
)

# Every family, best first for chatting on a Mac: newer releases over older, and among similar
# quality the faster one (a 3B-active MoE decodes several times faster than a dense 27B). The
# first whose 4-bit version fits comfortably becomes the first-run default.
_PREFERENCE = (
    "Qwen3.5-122B-A10B",
    "Qwen3.6-35B-A3B",
    "Qwen3.8-27B",
    "Qwen3.6-27B",
    "Qwen3.5-35B-A3B",
    "Qwen3.5-27B",
    "Qwen3-Next-80B-A3B-Instruct",
    "Qwen3-Next-80B-A3B-Thinking",
    "Qwen3-235B-A22B",
    "Qwen3.5-9B",
    "Qwen3-30B-A3B-Instruct-2507",
    "Qwen3-30B-A3B-Thinking-2507",
    "Qwen3-30B-A3B",
    "Qwen3-32B",
    "Qwen3-14B",
    "Qwen3.5-4B",
    "Qwen3-8B",
    "Qwen3-4B-Instruct-2507",
    "Qwen3-4B-Thinking-2507",
    "Qwen3-4B",
    "Qwen3.5-2B",
    "Qwen3-1.7B",
    "Qwen3.5-0.8B",
    "Qwen3-0.6B",
)
_DEFAULT_PREFERENCE = tuple(f"mlx-community/{family}-4bit" for family in _PREFERENCE)


def find(repo_id: str) -> Optional[CatalogModel]:
    for model in CATALOG:
        if model.repo_id.lower() == repo_id.lower():
            return model
    return None


def recommended_default(budget_bytes: Optional[int] = None) -> CatalogModel:
    """The model to suggest on first run: the best one whose plan says it fits this machine."""
    if budget_bytes is None:
        budget_bytes = memory_budget().bytes
    for repo_id in _DEFAULT_PREFERENCE:
        model = find(repo_id)
        assert model is not None, repo_id
        if model.plan(budget_bytes=budget_bytes).verdict == "fits":
            return model
    return find(_DEFAULT_PREFERENCE[-1])  # type: ignore[return-value]
