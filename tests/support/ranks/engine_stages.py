"""Every rank loads its pipeline stage of the model (argv[1]) into an engine of the group and
answers: a long first turn (prefilled in several chunks), a follow-up through the prompt cache,
a turn the last rank cancels after 3 pieces, and one more turn after it. Then each rank answers
the same turns alone with the whole model, as the reference (tests/test_distributed_pipeline.py)."""

import json
import sys
import threading

from mlx_backend import ChatMessage, ChatRequest, Engine, SamplingParams
from mlx_backend.distributed.group import RankGroup
from mlx_backend.events import AnswerDelta, Finished, ThinkingDelta

GREEDY = SamplingParams(temperature=0.0, top_p=1.0, top_k=0)
LONG = " ".join(f"word{i % 37} and more" for i in range(300))  # beyond one 512-token chunk


def answer(engine, messages, conversation, cancel_after=None, cancelling=False):
    request = ChatRequest(messages, conversation_id=conversation, sampling=GREEDY, max_tokens=12,
                          enable_thinking=False)
    pieces, finished, cancel = [], None, threading.Event()
    for event in engine.stream(request, cancel):
        if isinstance(event, (AnswerDelta, ThinkingDelta)):
            pieces.append(event.text)
            if cancelling and cancel_after is not None and len(pieces) == cancel_after:
                cancel.set()
        if isinstance(event, Finished):
            finished = event
    return {"text": "".join(pieces), "reason": finished.reason, "prompt": finished.stats.prompt_tokens,
            "cached": finished.stats.cached_tokens}


def conversation(engine, last_rank):
    first = [ChatMessage("user", LONG)]
    one = answer(engine, first, "c1")
    follow = first + [ChatMessage("assistant", one["text"]), ChatMessage("user", "and then?")]
    two = answer(engine, follow, "c1")
    three = answer(engine, [ChatMessage("user", "Count to ten.")], "c2", cancel_after=3, cancelling=last_rank)
    four = answer(engine, [ChatMessage("user", "Say hi.")], "c3")
    return [one, two, three, four]


group = RankGroup.from_environment()
staged = Engine.load(sys.argv[1], group=group, pipeline=True)
held = staged.info.weights_bytes
in_group = conversation(staged, group.rank == group.size - 1)
whole = Engine.load(sys.argv[1])
alone = conversation(whole, False)  # never cancelled: the group's cancelled turn is a prefix of it
print(json.dumps({"rank": group.rank, "group": in_group, "alone": alone, "held": held,
                  "whole": whole.info.weights_bytes}), flush=True)
