"""Decoding: turn generate_step's tokens into thinking and answer text, up to a stop.

With tools in the request the answer text also goes through the shared tool-call parser
(``mlx_backend/tools``): calls come out as ToolCallEvent, never as answer text.
"""

from __future__ import annotations

import threading
import time
from typing import Iterator, Optional

import mlx.core as mx

from mlx_backend.events import AnswerDelta, Event, FinishReason, ThinkingDelta, ToolCallEvent
from mlx_backend.generation.request import PreparedRequest
from mlx_backend.generation.stats import RequestRun
from mlx_backend.generation.stop_sequences import StopSequences
from mlx_backend.text.thinking import ThinkingParser, reply_with_reasoning
from mlx_backend.text.tokenizer import Qwen3Tokenizer
from mlx_backend.tools.tool_calls import StreamPiece, ToolCallStream, tool_schemas

TokenStep = tuple[int, mx.array]  # what generate_step yields: a token id and its logprobs


def decode_reply(
    tokenizer: Qwen3Tokenizer,
    prepared: PreparedRequest,
    run: RequestRun,
    tokens: Iterator[TokenStep],
    first: TokenStep,
    cancel: threading.Event,
) -> Iterator[Event]:
    """Stream the reply's deltas; returns (the finish reason, the reply as history).

    The reply as history is the answer as the model wrote it (tool-call blocks included), after
    its reasoning in a think block when the model thought (``reply_with_reasoning``): what the
    next turn's prompt renders back where the template keeps reasoning.

    Ends at an end-of-turn token (not shown), a stop string (cut before it), ``cancel`` (checked
    after every token) or when ``tokens`` runs out (max_tokens).
    """
    # From here the cache holds the whole prompt plus every token generate_step yielded
    # (it feeds a token to the model before yielding it).
    run.held = list(prepared.prompt)
    run.prefilled = len(prepared.prompt) - run.reused
    eos = tokenizer.eos_token_ids
    detokenizer = tokenizer.detokenizer()
    parser = ThinkingParser(prepared.starts_inside_thinking)
    stops = StopSequences(prepared.request.stop)
    reason: FinishReason = "length"
    answer: list[str] = []
    thought: list[str] = []
    stopped_by_string = False
    calls = ToolCallStream(tool_schemas(list(prepared.request.tools))) if prepared.request.tools else None
    call_count = 0

    def answer_events(piece: StreamPiece) -> Iterator[Event]:
        nonlocal call_count
        if piece.text:
            yield AnswerDelta(piece.text)
        for call in piece.calls:
            yield ToolCallEvent(call_count, call)
            call_count += 1

    def show(deltas: list[Event]) -> Iterator[Event]:
        for delta in deltas:
            if isinstance(delta, AnswerDelta):
                answer.append(delta.text)
                if calls is not None:
                    yield from answer_events(calls.feed(delta.text))
                    continue
            elif isinstance(delta, ThinkingDelta):
                thought.append(delta.text)
            yield delta

    item: Optional[TokenStep] = first
    while item is not None:
        token = item[0]
        run.held.append(token)
        run.generated += 1
        run.last_token_at = time.perf_counter()
        if token in eos:
            reason = "stop"
            break
        text, stopped_by_string = stops.feed(detokenizer.add_token(token))
        if text:
            yield from show(parser.feed(text))
        if stopped_by_string:
            reason = "stop"
            break
        if cancel.is_set():
            reason = "cancelled"
            break
        item = next(tokens, None)
    if not stopped_by_string:
        # Release what was held back: a partial character, a partial stop string.
        tail, hit = stops.feed(detokenizer.finalize())
        if not hit:
            tail += stops.flush()
        if tail:
            yield from show(parser.feed(tail))
    yield from show(parser.flush())
    if calls is not None:
        yield from answer_events(calls.finish())
    return reason, reply_with_reasoning("".join(thought), "".join(answer), thought=parser.saw_thinking)
