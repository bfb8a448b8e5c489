"""Random-weight Qwen3.5 / 3.6 / 3.8 and Qwen3-Next checkpoints, written by transformers itself.

The folders are what a release holds: transformers' own ``save_pretrained`` output (the full
multimodal ``...ForConditionalGeneration`` with its vision tower for Qwen3.5, one tensor per
expert for the MoE), the real 248K tokenizer files of the shared fixtures with the chosen
release's chat template, and its generation_config. Weights are fp32 and every parameter,
norms included, is random, so a mistake anywhere (a missed ``1 + weight`` norm, a mis-ordered
expert) shows in the logits.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Literal

from tests.support.paths import SHARED_FIXTURES
from tests.support.tokenizers import write_qwen3_tokenizer

HybridKind = Literal["dense", "moe", "next"]
Release = Literal["qwen3.5", "qwen3.6", "qwen3.8"]

FAMILY = SHARED_FIXTURES / "qwen3.5-family"
TOKENIZER_248K = FAMILY / "tokenizer-248k"
# Where each release's chat template lives in the fixtures.
TEMPLATES: dict[str, Path] = {
    "qwen3.5": FAMILY / "Qwen3.5-4B" / "chat_template.jinja",
    "qwen3.6": FAMILY / "Qwen3.6-27B" / "chat_template.jinja",
    "qwen3.8": FAMILY / "Qwen3.8-27B" / "chat_template.jinja",
}
VOCAB_248K = 248320  # the padded embedding size of every Qwen3.5-family release
EOS_248K = [248046, 248044]  # <|im_end|>, <|endoftext|> (generation_config of Qwen3.8)

# Small but complete: 4 layers = 3 Gated DeltaNet + 1 full attention, partial rotary 0.25.
TINY_TEXT: dict[str, Any] = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "head_dim": 64,
    "linear_num_value_heads": 4,
    "linear_num_key_heads": 2,
    "linear_key_head_dim": 16,
    "linear_value_head_dim": 16,
    "linear_conv_kernel_dim": 4,
    "full_attention_interval": 4,
    "max_position_embeddings": 262144,
    "rms_norm_eps": 1e-6,
}
TINY_EXPERTS: dict[str, Any] = {
    "num_experts": 4,
    "num_experts_per_tok": 2,
    "moe_intermediate_size": 32,
    "shared_expert_intermediate_size": 32,
}
TINY_VISION: dict[str, Any] = {
    "depth": 1, "hidden_size": 32, "intermediate_size": 64, "num_heads": 2,
    "out_hidden_size": 64, "patch_size": 4,
}


def hybrid_fixtures_available() -> bool:
    return (TOKENIZER_248K / "vocab.json").is_file() and all(p.is_file() for p in TEMPLATES.values())


def write_hybrid_checkpoint(
    dst: str | Path,
    kind: HybridKind = "dense",
    *,
    release: Release = "qwen3.5",
    tokenizer: bool = True,
    tie_word_embeddings: bool = False,
    seed: int = 0,
    **text_overrides: Any,
) -> Path:
    """Write a random checkpoint of ``kind`` (Qwen3.5 dense, Qwen3.5 MoE or Qwen3-Next).

    ``tokenizer`` copies the real tokenizer: the 248K one with ``release``'s template for
    Qwen3.5-family kinds, Qwen3's for Qwen3-Next. Without it the vocabulary defaults to 512
    ids (fast for pure logit checks). ``text_overrides`` change the decoder's settings.
    """
    import torch  # the test extra: only tests that write checkpoints need it

    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    vocab = VOCAB_248K if tokenizer and kind != "next" else 512
    if tokenizer and kind == "next":
        vocab = 151936
    text = {**TINY_TEXT, "vocab_size": vocab, "tie_word_embeddings": tie_word_embeddings}
    if kind in ("moe", "next"):
        text.update(TINY_EXPERTS)
    text.update(text_overrides)

    torch.manual_seed(seed)
    model = _build(kind, text, tie_word_embeddings)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            # Norm weights start at zero (or one) in transformers; random ones test the offsets.
            scale = 0.2 if parameter.ndim == 1 else 0.08
            parameter.normal_(0.0, scale)
            if name.endswith("A_log"):
                parameter.uniform_(-1.0, 1.0)
    model.save_pretrained(dst)

    if tokenizer and kind == "next":
        write_qwen3_tokenizer(dst, "hybrid")
    elif tokenizer:
        write_248k_tokenizer(dst, release)
    return dst


def write_248k_tokenizer(dst: str | Path, release: Release = "qwen3.5") -> None:
    """The 248K vocabulary, Qwen3.8's tokenizer_config with ``release``'s template, and the
    eos list of generation_config."""
    dst = Path(dst)
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(TOKENIZER_248K / "vocab.json", dst / "vocab.json")
    shutil.copyfile(TOKENIZER_248K / "merges.txt", dst / "merges.txt")
    config = json.loads((FAMILY / "Qwen3.8-27B" / "tokenizer_config.json").read_text(encoding="utf-8"))
    config["chat_template"] = TEMPLATES[release].read_text(encoding="utf-8")
    (dst / "tokenizer_config.json").write_text(json.dumps(config, indent=2, ensure_ascii=False), encoding="utf-8")
    generation_path = dst / "generation_config.json"
    generation = json.loads(generation_path.read_text()) if generation_path.is_file() else {}
    generation["eos_token_id"] = list(EOS_248K)
    generation_path.write_text(json.dumps(generation, indent=2))


def _build(kind: HybridKind, text: dict[str, Any], tie: bool):
    import torch
    import transformers as T

    if kind == "next":
        config = T.Qwen3NextConfig(**text)
        return T.Qwen3NextForCausalLM(config).to(torch.float32)
    if kind == "moe":
        config = T.Qwen3_5MoeConfig(text_config=text, vision_config=TINY_VISION, tie_word_embeddings=tie)
        return T.Qwen3_5MoeForConditionalGeneration(config).to(torch.float32)
    config = T.Qwen3_5Config(text_config=text, vision_config=TINY_VISION, tie_word_embeddings=tie)
    return T.Qwen3_5ForConditionalGeneration(config).to(torch.float32)


def text_parts(model):
    """(the decoder body: embed_tokens, layers, norm; the head) of a loaded hybrid model."""
    text = getattr(model, "language_model", model)  # Qwen3.5: Model.language_model; Qwen3-Next: Model
    return text.model, text


def silence_layer(layer) -> None:
    """Zero a decoder layer's output projections: it computes, but adds nothing to the residual."""
    import mlx.core as mx

    mixer = layer.linear_attn.out_proj if layer.is_linear else layer.self_attn.o_proj
    mixer.weight = mx.zeros_like(mixer.weight)
    mlp = layer.mlp
    downs = [mlp.down_proj] if hasattr(mlp, "down_proj") else [mlp.switch_mlp.down_proj, mlp.shared_expert.down_proj]
    for down in downs:
        down.weight = mx.zeros_like(down.weight)


def agree_with_hybrid(target, draft, *, mix: float = 0.0) -> None:
    """Make a hybrid ``target`` its ``draft`` plus silent layers (draft_pairs.agree_with for
    Qwen3.5 / Qwen3-Next): the same predictions, or ``mix`` of its own head blended in."""
    import mlx.core as mx

    body, head = text_parts(target)
    draft_body, draft_head = text_parts(draft)
    own_head = head.lm_head.weight
    body.embed_tokens.update(draft_body.embed_tokens.parameters())
    body.norm.update(draft_body.norm.parameters())
    head.lm_head.update(draft_head.lm_head.parameters())
    for i, layer in enumerate(body.layers):
        if i < len(draft_body.layers):
            layer.update(draft_body.layers[i].parameters())
        else:
            silence_layer(layer)
    if mix:
        head.lm_head.weight = (1 - mix) * draft_head.lm_head.weight + mix * own_head
    mx.eval(target.parameters())


# ------------------------------------------------------------------ the MTP layer


def add_mtp_tensors(folder: str | Path, kind: HybridKind = "dense", *, seed: int = 0) -> list[str]:
    """Add random ``mtp.*`` tensors, named as the published checkpoints name them, to a
    checkpoint written by ``write_hybrid_checkpoint`` (transformers drops them on save).

    Top-level ``mtp.`` names for every kind (Qwen3.5's multimodal checkpoints too): ``fc``
    (H x 2H), ``pre_fc_norm_embedding``, ``pre_fc_norm_hidden``, ``norm`` and ``layers.0.*``,
    one full-attention decoder layer shaped like the model's own (copied shapes of its first
    full-attention layer); MoE experts fused (``experts.gate_up_proj``) for Qwen3.5 MoE, one
    tensor per expert for Qwen3-Next, as Qwen publishes them. Returns the names added.
    """
    import numpy as np
    from safetensors.numpy import load_file, save_file

    folder = Path(folder)
    path = folder / "model.safetensors"
    tensors = load_file(str(path))
    config = json.loads((folder / "config.json").read_text())
    text = config.get("text_config", config)
    hidden = int(text["hidden_size"])
    interval = int(text.get("full_attention_interval") or 4)
    prefix = "model.layers." if kind == "next" else "model.language_model.layers."
    source = f"{prefix}{interval - 1}."
    rng = np.random.default_rng(seed)

    def rand(shape, scale):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    mtp: dict[str, Any] = {
        "mtp.fc.weight": rand((hidden, 2 * hidden), 0.08),
        "mtp.pre_fc_norm_embedding.weight": rand((hidden,), 0.2),
        "mtp.pre_fc_norm_hidden.weight": rand((hidden,), 0.2),
        "mtp.norm.weight": rand((hidden,), 0.2),
    }
    experts: dict[str, dict[int, Any]] = {}
    for name, value in tensors.items():
        if not name.startswith(source):
            continue
        rest = name[len(source):]
        parts = rest.split(".")
        if kind == "moe" and len(parts) >= 4 and parts[1] == "experts" and parts[2].isdigit():
            experts.setdefault(parts[3], {})[int(parts[2])] = value.shape
            continue
        mtp[f"mtp.layers.0.{rest}"] = rand(value.shape, 0.2 if value.ndim == 1 else 0.08)
    if experts:  # fused, as the published Qwen3.5 MoE checkpoints hold them
        count = len(experts["gate_proj"])
        gate, down = experts["gate_proj"][0], experts["down_proj"][0]
        mtp["mtp.layers.0.mlp.experts.gate_up_proj"] = rand((count, 2 * gate[0], gate[1]), 0.08)
        mtp["mtp.layers.0.mlp.experts.down_proj"] = rand((count, down[0], down[1]), 0.08)
    tensors.update(mtp)
    save_file(tensors, str(path), metadata={"format": "pt"})
    return sorted(mtp)


def write_mtp_checkpoint(dst: str | Path, kind: HybridKind = "dense", *, mtp_seed: int = 7, **options: Any) -> Path:
    """``write_hybrid_checkpoint`` plus random MTP tensors."""
    path = write_hybrid_checkpoint(dst, kind, **options)
    add_mtp_tensors(path, kind, seed=mtp_seed)
    return path


def make_mtp_agree(model, mtp, *, mix: float = 0.0, seed: int = 0) -> None:
    """Known agreement between a loaded model and its MTP layer, for tests and the benchmark.

    Every decoder layer of the target is silenced (its output projections zero, it still
    computes): its hidden state is norm(embed(t)), so its next token is a fixed function
    f(t) of the current one. The MTP's fc passes the embedding half through, its layer is
    silenced, its embedding norm is the identity scale and its final norm the target's: it
    predicts f(t[p+1]) = t[p+2], the target's next-next token, at every depth (acceptance
    100%). ``mix`` in (0, 1] blends a random matrix into fc (partial agreement).
    """
    import mlx.core as mx

    body, _ = text_parts(model)
    for layer in body.layers:
        silence_layer(layer)
    silence_layer(mtp.layers[0])
    hidden = body.norm.weight.shape[0]
    passthrough = mx.concatenate([mx.eye(hidden), mx.zeros((hidden, hidden))], axis=1)
    if mix:
        noise = mx.random.normal(passthrough.shape, key=mx.random.key(seed)) * hidden**-0.5
        passthrough = (1 - mix) * passthrough + mix * noise
    mtp.fc.weight = passthrough.astype(body.norm.weight.dtype)
    mtp.pre_fc_norm_embedding.weight = mx.ones_like(mtp.pre_fc_norm_embedding.weight)
    mtp.norm.weight = body.norm.weight
    mx.eval(model.parameters(), mtp.parameters())
