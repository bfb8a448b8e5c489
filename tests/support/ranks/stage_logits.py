"""Each rank loads its pipeline stage of the checkpoint (argv[1]), then the whole model alone as
the reference, and runs the same prompt through both: a prefill in two chunks through the cache,
then greedy decoding. Reports the stage's layers, its resident bytes measured by MLX's allocator
right after loading, the largest logit difference and both token sequences
(tests/test_distributed_pipeline.py)."""

import json
import sys

import mlx.core as mx
from mlx_lm.models.cache import make_prompt_cache

from mlx_backend.distributed.group import RankGroup
from mlx_backend.distributed.pipeline import load_pipeline_stage
from mlx_backend.loading.loader import load_model

PROMPT = [3, 17, 42, 5, 99, 7, 64, 12, 28, 31, 2, 8]
STEPS = 6


def run(model):
    cache = make_prompt_cache(model)
    first = model(mx.array([PROMPT[:7]]), cache=cache)
    rest = model(mx.array([PROMPT[7:]]), cache=cache)
    logits = mx.concatenate([first, rest], axis=1)
    tokens, token = [], mx.argmax(rest[0, -1]).item()
    for _ in range(STEPS):
        tokens.append(token)
        token = mx.argmax(model(mx.array([[token]]), cache=cache)[0, -1]).item()
    mx.eval(logits)
    return logits, tokens


group = RankGroup.from_environment()
mx.random.seed(0)
before = mx.get_active_memory()
stage = load_pipeline_stage(sys.argv[1], group)
stage_resident = mx.get_active_memory() - before
stage_logits, stage_tokens = run(stage)
whole = load_model(sys.argv[1])
whole_logits, whole_tokens = run(whole)
stack = getattr(stage, "language_model", stage).model
print(json.dumps({
    "rank": group.rank,
    "start": stack.start_idx,
    "layers": len(stage.layers),
    "stage_bytes": stage.load_info.weights_bytes,
    "whole_bytes": whole.load_info.weights_bytes,
    "stage_resident": stage_resident,
    "max_diff": mx.max(mx.abs(stage_logits - whole_logits)).item(),
    "stage_tokens": stage_tokens,
    "whole_tokens": whole_tokens,
}), flush=True)
