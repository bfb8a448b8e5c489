"""What the speculative-decoding tests share: a greedy request, an answer read to the end (or
cancelled after some deltas), and a plain engine beside a drafting one over the same model."""

from __future__ import annotations

import threading
from typing import Optional

from mlx_backend.events import AnswerDelta, ChatMessage, ChatRequest, Finished, SamplingParams
from mlx_backend.generation.engine import Engine

GREEDY = SamplingParams(temperature=0.0, top_p=1.0, top_k=0)


def request(text: str, **fields) -> ChatRequest:
    fields.setdefault("sampling", GREEDY)
    fields.setdefault("max_tokens", 40)
    return ChatRequest(messages=(ChatMessage("user", text),), enable_thinking=False, **fields)


def answer(
    engine: Engine, req: ChatRequest, cancel: Optional[threading.Event] = None, cancel_after: int = 0
) -> tuple[str, Optional[Finished]]:
    """The answer text and the Finished event; ``cancel_after`` deltas sets ``cancel``."""
    text, finished = [], None
    cancel = cancel or threading.Event()
    for event in engine.stream(req, cancel):
        if isinstance(event, AnswerDelta):
            text.append(event.text)
            if cancel_after and len(text) >= cancel_after:
                cancel.set()
        elif isinstance(event, Finished):
            finished = event
    return "".join(text), finished


def engines(models: dict, target: str = "same", **options) -> tuple[Engine, Engine]:
    """A plain engine and one drafting with ``models["draft"]``, over ``models[target]``."""
    plain = Engine(models[target], models["tokenizer"])
    spec = Engine(
        models[target], models["tokenizer"],
        draft_model=models["draft"], draft_tokenizer=models["draft_tokenizer"], **options,
    )
    return plain, spec
