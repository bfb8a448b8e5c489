"""The multi-token-prediction (MTP) layer of the Qwen3.5 family and Qwen3-Next checkpoints.

The published checkpoints carry one extra full-attention decoder layer under ``mtp.*`` (config
``mtp_num_hidden_layers: 1``) trained to predict the token after next. mlx-lm drops those
tensors; ``load_mtp`` reads them on their own, beside the main model, which loads as before.

From the token ``t[p+1]`` and the main model's hidden state at ``p`` (after its final norm):

    x = fc(concat([pre_fc_norm_embedding(embed(t[p+1])), pre_fc_norm_hidden(h[p])]))
    x = layers[0](x)                      # its own KV cache, one entry per such pair
    out = norm(x); logits = lm_head(out)  # predicts t[p+2]; ``out`` is the next "h"

The embeddings and the head are the main model's (``mtp_use_dedicated_embeddings: false``).
The norms are the models' (1 + weight) RMSNorms: stored shifted, as mlx-lm stores the main
model's, when the checkpoint is in the transformers layout. The decoder layer is mlx-lm's own
(``qwen3_5.DecoderLayer``, MoE where the model is MoE; ``Qwen3NextDecoderLayer``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Callable, Optional

import mlx.core as mx
import mlx.nn as nn
from mlx_lm.models import qwen3_5 as mlx_qwen3_5
from mlx_lm.models import qwen3_next as mlx_qwen3_next
from mlx_lm.models.base import create_attention_mask
from mlx_lm.models.cache import KVCache

from mlx_backend.errors import ModelLoadError
from mlx_backend.loading.checkpoint_files import index_weight_map, read_safetensors_header, weight_files
from mlx_backend.models.rope import current_rope_scaling, set_rope_scaling

MTP_PREFIX = "mtp."
# Norms stored as ``weight`` where the model computes with ``1 + weight``.
_NORMS = (
    "pre_fc_norm_embedding.weight", "pre_fc_norm_hidden.weight", "norm.weight",
    ".input_layernorm.weight", ".post_attention_layernorm.weight", ".q_norm.weight", ".k_norm.weight",
)
_PER_EXPERT = re.compile(r"^(.*\.mlp)\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")


def text_parts(model: nn.Module) -> tuple[nn.Module, Any]:
    """(the decoder body, the object holding its head and args) of a Qwen3.5 / Qwen3-Next model."""
    text = getattr(model, "language_model", None) or model
    return text.model, text


def head_of(model: nn.Module) -> Callable[[mx.array], mx.array]:
    body, text = text_parts(model)
    if text.args.tie_word_embeddings:
        return body.embed_tokens.as_linear
    return text.lm_head


def forward_with_hidden(model: nn.Module) -> Callable[[mx.array, Any], tuple[mx.array, mx.array]]:
    """``(inputs, cache) -> (logits, hidden)``: the model's own forward split in body then head,
    so the hidden states after the final norm (what the MTP layer reads) come out too."""
    body, _ = text_parts(model)
    head = head_of(model)

    def forward(inputs: mx.array, cache: Any) -> tuple[mx.array, mx.array]:
        hidden = body(inputs, cache)
        return head(hidden), hidden

    return forward


def body_of(model: nn.Module) -> Callable[[mx.array, Any], mx.array]:
    """``(inputs, cache) -> hidden``: the model without its head (prefill for the MTP)."""
    return text_parts(model)[0].__call__


class MultiTokenPredictor(nn.Module):
    """The MTP module of ``target``, sharing its embeddings and head (not its parameters)."""

    def __init__(self, target: nn.Module):
        super().__init__()
        body, text = text_parts(target)
        args = text.args
        hidden, eps = args.hidden_size, args.rms_norm_eps
        self.pre_fc_norm_embedding = nn.RMSNorm(hidden, eps=eps)
        self.pre_fc_norm_hidden = nn.RMSNorm(hidden, eps=eps)
        self.fc = nn.Linear(2 * hidden, hidden, bias=False)
        # A full-attention layer: the index of the first one in the main model's layout.
        full = args.full_attention_interval - 1
        if isinstance(args, mlx_qwen3_next.ModelArgs):
            self.layers = [mlx_qwen3_next.Qwen3NextDecoderLayer(args, full)]
        else:
            self.layers = [mlx_qwen3_5.DecoderLayer(args, full)]
        self.norm = nn.RMSNorm(hidden, eps=eps)
        # Plain attributes (functions), so the shared weights are no part of this module's tree.
        self._embed = body.embed_tokens.__call__
        self._head = head_of(target)
        self.args = target.args  # for shape_of (rope), as the main model's
        self.load_info = getattr(target, "load_info", None)
        set_rope_scaling(self, current_rope_scaling(target))

    def __call__(self, tokens: mx.array, hidden: mx.array, cache: list[Any]) -> tuple[mx.array, mx.array]:
        """``tokens`` [1, n] (the ones after the hidden states' positions), ``hidden`` [1, n, H]:
        (logits [1, n, V] for the tokens after ``tokens``, the output hidden states)."""
        e = self.pre_fc_norm_embedding(self._embed(tokens))
        h = self.pre_fc_norm_hidden(hidden)
        x = self.fc(mx.concatenate([e, h], axis=-1))
        x = self.layers[0](x, mask=create_attention_mask(x, cache[0]), cache=cache[0])
        out = self.norm(x)
        return self._head(out), out

    def make_cache(self) -> list[Any]:
        return [KVCache()]


def mtp_tensor_names(folder: Path) -> list[str]:
    """The ``mtp.*`` tensors a checkpoint folder holds (from the headers: nothing is read)."""
    names: list[str] = []
    weight_map = index_weight_map(folder)
    if weight_map is not None:
        return sorted(n for n in weight_map if n.startswith(MTP_PREFIX))
    for file in weight_files(folder):
        names += [n for n in read_safetensors_header(file).tensors if n.startswith(MTP_PREFIX)]
    return sorted(names)


def load_mtp(model: nn.Module, folder: Optional[str | Path] = None) -> Optional[MultiTokenPredictor]:
    """The MTP module of a loaded hybrid ``model`` from its checkpoint folder (the model's own
    by default), or None when the checkpoint has no ``mtp.*`` tensors or the model is no hybrid.

    Quantized like the rest when the checkpoint's MTP tensors are packed (``.scales`` beside
    them), in the main model's float dtype otherwise.
    """
    from mlx_backend.loading.loader import quantization_settings, quantize_like_checkpoint

    info = getattr(model, "load_info", None)
    if folder is None:
        if info is None:
            return None
        folder = info.path
    folder = Path(folder)
    if getattr(model, "model_type", None) not in ("qwen3_5", "qwen3_5_moe", "qwen3_next"):
        return None
    names = mtp_tensor_names(folder)
    if not names:
        return None
    raw: dict[str, mx.array] = {}
    hf_layout = False
    for file in weight_files(folder):
        header = read_safetensors_header(file)
        # transformers' conv1d weights are [C, 1, K]; mlx-lm's converted ones [C, K, 1].
        hf_layout = hf_layout or any(
            "conv1d.weight" in n and t.shape[-1] != 1 for n, t in header.tensors.items()
        )
        wanted = [n for n in header.tensors if n.startswith(MTP_PREFIX)]
        if wanted:
            loaded = mx.load(str(file))
            raw.update((n[len(MTP_PREFIX):], loaded[n]) for n in wanted)
    weights = _sanitize(raw, shift_norms=hf_layout)
    mtp = MultiTokenPredictor(model)
    quantization = quantization_settings(info.config) if info is not None else None
    if quantization is not None and any(k.endswith(".scales") for k in weights):
        quantize_like_checkpoint(mtp, weights, quantization)
    dtype = _float_dtype(model)
    weights = {
        k: v.astype(dtype) if mx.issubdtype(v.dtype, mx.floating) and v.dtype != dtype else v
        for k, v in weights.items()
    }
    try:
        mtp.load_weights(list(weights.items()), strict=True)
    except ValueError as error:
        raise ModelLoadError(f"The MTP weights in {folder} do not fit the model: {error}") from None
    mx.eval(mtp.parameters())
    mtp.eval()
    return mtp


def _sanitize(weights: dict[str, mx.array], *, shift_norms: bool) -> dict[str, mx.array]:
    """Checkpoint names (without ``mtp.``) -> this module's: experts into mlx-lm's SwitchGLU
    (fused ``experts.gate_up_proj`` as Qwen3.5 MoE publishes, or one tensor per expert as
    Qwen3-Next does), norms shifted by one in the transformers layout."""
    out: dict[str, mx.array] = {}
    experts: dict[str, dict[str, dict[int, mx.array]]] = {}
    for key, value in weights.items():
        match = _PER_EXPERT.match(key)
        if match:
            experts.setdefault(match.group(1), {}).setdefault(match.group(3), {})[int(match.group(2))] = value
        elif key.endswith(".experts.gate_up_proj"):
            prefix = key.removesuffix(".experts.gate_up_proj")
            mid = value.shape[-2] // 2
            out[f"{prefix}.switch_mlp.gate_proj.weight"] = value[..., :mid, :]
            out[f"{prefix}.switch_mlp.up_proj.weight"] = value[..., mid:, :]
        elif key.endswith(".experts.down_proj"):
            out[key.replace(".experts.down_proj", ".switch_mlp.down_proj.weight")] = value
        else:
            if shift_norms and value.ndim == 1 and any(key.endswith(s) for s in _NORMS):
                value = value + 1.0
            out[key] = value
    for prefix, projections in experts.items():
        for name, by_expert in projections.items():
            out[f"{prefix}.switch_mlp.{name}.weight"] = mx.stack([by_expert[e] for e in sorted(by_expert)])
    return out


def _float_dtype(model: nn.Module) -> mx.Dtype:
    return text_parts(model)[0].norm.weight.dtype
