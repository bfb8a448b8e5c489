"""Every rank loads the model folder argv[1] tensor-parallel and reports: the logits of a
fixed token sequence (saved as argv[2]/logits-rank<r>.npy), its resident weight bytes, and
the greedy tokens of one chat turn through the unchanged Engine
(tests/test_distributed_tensor_parallel.py). A model that can't be split reports the error."""

import faulthandler
import json
faulthandler.dump_traceback_later(150, exit=True)  # a hung collective fails with its stack
import sys
from pathlib import Path

import mlx.core as mx

from mlx_backend import ChatMessage, ChatRequest, Engine, SamplingParams
from mlx_backend.distributed.group import RankGroup
from mlx_backend.distributed.tensor_parallel import (
    TensorParallelError,
    load_tensor_parallel,
    sharded_weights_bytes,
)
from mlx_backend.events import AnswerDelta, Finished, ThinkingDelta
from mlx_backend.memory.sizes import model_nbytes
from mlx_backend.models.shape import ModelShape


group = RankGroup.from_environment()
folder, out = sys.argv[1], Path(sys.argv[2])
before = mx.get_active_memory()
mx.reset_peak_memory()
try:
    model, tokenizer = load_tensor_parallel(folder, group)
except TensorParallelError as error:
    print(json.dumps({"rank": group.rank, "error": str(error)}), flush=True)
    sys.exit(0)
resident = mx.get_active_memory() - before
peak = mx.get_peak_memory() - before

vocab = ModelShape.from_config(model.load_info.config).vocab_size
prompt = [[(37 * i + 11) % vocab for i in range(8)]]
logits = model(mx.array(prompt))
mx.eval(logits)
mx.save(str(out / f"logits-rank{group.rank}.npy"), logits.astype(mx.float32))

engine = Engine(model, tokenizer, group=group)
request = ChatRequest(
    [ChatMessage("user", "Count to ten.")],
    sampling=SamplingParams(temperature=0.0, top_p=1.0, top_k=0),
    max_tokens=12,
)
texts, finished = [], None
for event in engine.stream(request):
    if isinstance(event, (AnswerDelta, ThinkingDelta)):
        texts.append(event.text)
    if isinstance(event, Finished):
        finished = event
print(json.dumps({
    "rank": group.rank,
    "size": group.size,
    "sharded_bytes": sharded_weights_bytes(model),
    "weights_bytes": model_nbytes(model),
    "load_info_bytes": model.load_info.weights_bytes,
    "active_bytes": resident,
    "peak_bytes": peak,
    "text": "".join(texts),
    "reason": finished.reason,
    "generation_tokens": finished.stats.generation_tokens,
}), flush=True)
