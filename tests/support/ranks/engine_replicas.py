"""Every rank loads the same small model (argv[1]) and answers one sampled request; each rank
seeds its own generator differently and the last rank cancels after a few tokens.
Reports the tokens each rank produced (tests/test_distributed_group.py)."""

import json
import sys
import threading

import mlx.core as mx

from mlx_backend import ChatMessage, ChatRequest, Engine, SamplingParams
from mlx_backend.distributed.group import RankGroup
from mlx_backend.events import AnswerDelta, Finished, ThinkingDelta

group = RankGroup.from_environment()
engine = Engine.load(sys.argv[1], group=group)
mx.random.seed(100 + group.rank)  # the ranks' own draws differ: only rank 0's may count
request = ChatRequest(
    [ChatMessage("user", "Tell me a story.")],
    sampling=SamplingParams(temperature=1.0, top_p=1.0, top_k=0),
    max_tokens=40,
)
cancel_after = int(sys.argv[2])
texts, finished = [], None
cancel = threading.Event()
for event in engine.stream(request, cancel):
    if isinstance(event, (AnswerDelta, ThinkingDelta)):
        texts.append(event.text)
        if group.rank == group.size - 1 and len(texts) == cancel_after:
            cancel.set()
    if isinstance(event, Finished):
        finished = event
print(json.dumps({
    "rank": group.rank, "text": "".join(texts), "reason": finished.reason,
    "tokens": finished.stats.generation_tokens,
}), flush=True)
