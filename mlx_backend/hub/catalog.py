"""The curated list of Qwen3 models the app offers, with what each needs in memory.

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
            "July 2025 update: answers directly (no thinking), 256K context."),
    _Family("Qwen3-4B-Thinking-2507", "dense", "4B", _2507_CONTEXT, "always",
            {**_dense(2560, 9728, 36, 32, True), "rope_theta": 5e6, "max_position_embeddings": 262144},
            "July 2025 update: always thinks first, 256K context."),
    _Family("Qwen3-30B-A3B-Instruct-2507", "moe", "30B total, 3B active", _2507_CONTEXT, "never",
            {**_moe(2048, 6144, 768, 48, 32), "rope_theta": 1e7, "max_position_embeddings": 262144},
            "July 2025 update of the 30B MoE: fast direct answers, 256K context."),
    _Family("Qwen3-30B-A3B-Thinking-2507", "moe", "30B total, 3B active", _2507_CONTEXT, "always",
            {**_moe(2048, 6144, 768, 48, 32), "rope_theta": 1e7, "max_position_embeddings": 262144},
            "July 2025 update of the 30B MoE: always thinks first, 256K context."),
)


def _quantized_config(family: _Family, bits: int) -> dict[str, Any]:
    quantization: dict[str, Any] = {"group_size": GROUP_SIZE, "bits": bits}
    if family.architecture == "moe":
        # mlx-lm keeps MoE routers at 8 bits whatever the rest (qwen3_moe.quant_predicate).
        for layer in range(int(family.dims["num_hidden_layers"])):
            quantization[f"model.layers.{layer}.mlp.gate"] = {"group_size": GROUP_SIZE, "bits": 8}
    return {
        **family.dims,
        "vocab_size": QWEN3_VOCAB,
        "torch_dtype": "bfloat16",
        "rms_norm_eps": 1e-6,
        "quantization": quantization,
    }


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
    )
    for family in _FAMILIES
    for bits in (4, 8)
)

# First choice first: the best model that fits comfortably becomes the first-run default.
_DEFAULT_PREFERENCE = (
    "mlx-community/Qwen3-30B-A3B-Instruct-2507-4bit",
    "mlx-community/Qwen3-8B-4bit",
    "mlx-community/Qwen3-4B-Instruct-2507-4bit",
    "mlx-community/Qwen3-1.7B-4bit",
    "mlx-community/Qwen3-0.6B-4bit",
)


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
