"""Draft/target pairs whose agreement is known, for speculative decoding tests and the benchmark.

Random weights agree on almost nothing, so a target is built from its draft: the same
embeddings, layers, final norm and head, plus extra layers whose output projections (o_proj and
down_proj) are zero. Those layers compute (costing time like real ones) but add nothing to the
residual stream, so the target predicts exactly what the draft does: acceptance is 100%.
``mix`` in (0, 1] instead blends a second random head into the target's, so the two
disagree on some tokens: partial agreement, measured by the benchmark.
"""

from __future__ import annotations

from pathlib import Path

import mlx.core as mx
import mlx.nn as nn

from mlx_backend.loading.loader import load
from mlx_backend.text.tokenizer import Qwen3Tokenizer
from tests.support.checkpoints import write_random_checkpoint


def write_pair(root: Path, *, draft_layers: int = 2, extra_layers: int = 2, **config) -> tuple[Path, Path]:
    """A draft checkpoint and a (random) target checkpoint of the same shape plus layers."""
    draft = write_random_checkpoint(root / "draft", num_hidden_layers=draft_layers, seed=1, **config)
    target = write_random_checkpoint(
        root / "target", num_hidden_layers=draft_layers + extra_layers, seed=2, **config
    )
    return draft, target


def load_pair(
    draft_path: Path, target_path: Path, *, mix: float = 0.0
) -> tuple[nn.Module, Qwen3Tokenizer, nn.Module, Qwen3Tokenizer]:
    """(target, its tokenizer, draft, its tokenizer), the target made to agree with the draft."""
    draft, draft_tokenizer = load(draft_path)
    target, tokenizer = load(target_path)
    agree_with(target, draft, mix=mix)
    return target, tokenizer, draft, draft_tokenizer


def agree_with(target: nn.Module, draft: nn.Module, *, mix: float = 0.0) -> None:
    """Make ``target`` the draft plus silent layers (and ``mix`` of its own head, if any)."""
    own_head = target.lm_head.weight
    target.model.embed_tokens.update(draft.model.embed_tokens.parameters())
    target.model.norm.update(draft.model.norm.parameters())
    target.lm_head.update(draft.lm_head.parameters())
    for i, layer in enumerate(target.model.layers):
        if i < len(draft.model.layers):
            layer.update(draft.model.layers[i].parameters())
        else:
            layer.self_attn.o_proj.weight = mx.zeros_like(layer.self_attn.o_proj.weight)
            layer.mlp.down_proj.weight = mx.zeros_like(layer.mlp.down_proj.weight)
    if mix:
        target.lm_head.weight = (1 - mix) * draft.lm_head.weight + mix * own_head
    mx.eval(target.parameters())


class QuotingModel:
    """Wraps a real model so that every position predicts the next token of a fixed reply after
    the prompt (any number of positions per call, so verification passes see it too); set
    ``prompt_length`` to the prompt's token count before generating."""

    def __init__(self, model, reply: list[int], end: int):
        self._model = model
        self.reply = reply + [end]
        self.prompt_length = 0

    def __getattr__(self, name):
        return getattr(self._model, name)

    def __call__(self, inputs, cache=None, **kwargs):
        before = cache[0].offset if cache else 0
        logits = self._model(inputs, cache=cache, **kwargs)
        vocab = logits.shape[-1]
        rows = []
        for i in range(inputs.shape[1]):
            at = before + i + 1 - self.prompt_length  # reply index this position predicts
            if 0 <= at < len(self.reply):
                forced = mx.where(mx.arange(vocab) == self.reply[at], 0.0, -1e9).astype(logits.dtype)
                # Still a function of the network's output, so MLX computes it (lazy evaluation
                # would otherwise skip the network, and a benchmark would time nothing).
                rows.append(forced + 0.0 * logits[0, i])
            else:
                rows.append(logits[0, i])
        return mx.stack(rows)[None]
