"""What rank 0 tells the other ranks between requests, as bytes for ``broadcast_bytes``.

A frame is one small JSON object: ``{"kind": "request", "request": {...}}`` (run this next),
``{"kind": "heartbeat"}`` (nothing to do yet, the leader is alive) or ``{"kind": "stop"}``
(the group is shutting down; ``error`` says why, when it is a failure).

The request codec is explicit, field by field: a new ``ChatRequest`` field must be added here
(tests/test_distributed_serving.py checks every field round-trips), so no rank ever runs a
request that differs from rank 0's by a field the codec silently dropped.
"""

from __future__ import annotations

import json
from typing import Any, Optional

from mlx_backend.events import ChatMessage, ChatRequest, SamplingParams, ToolCall

REQUEST = "request"
HEARTBEAT = "heartbeat"
STOP = "stop"


def encode_frame(kind: str, request: Optional[ChatRequest] = None, error: Optional[str] = None) -> bytes:
    frame: dict[str, Any] = {"kind": kind}
    if request is not None:
        frame["request"] = request_to_json(request)
    if error is not None:
        frame["error"] = error
    return json.dumps(frame, ensure_ascii=False, separators=(",", ":")).encode()


def decode_frame(payload: bytes) -> tuple[str, Optional[ChatRequest], Optional[str]]:
    """(kind, request or None, error or None) of a frame from ``encode_frame``."""
    frame = json.loads(payload.decode())
    kind = frame["kind"]
    if kind not in (REQUEST, HEARTBEAT, STOP):
        raise ValueError(f"unknown frame kind {kind!r}")
    request = request_from_json(frame["request"]) if kind == REQUEST else None
    return kind, request, frame.get("error")


def request_to_json(request: ChatRequest) -> dict[str, Any]:
    sampling = request.sampling
    return {
        "messages": [_message_to_json(message) for message in request.messages],
        "conversation_id": request.conversation_id,
        "enable_thinking": request.enable_thinking,
        "sampling": None if sampling is None else {
            "temperature": sampling.temperature,
            "top_p": sampling.top_p,
            "top_k": sampling.top_k,
            "min_p": sampling.min_p,
            "presence_penalty": sampling.presence_penalty,
        },
        "max_tokens": request.max_tokens,
        "stop": list(request.stop),
        "seed": request.seed,
        "kv_bits": request.kv_bits,
        "yarn_factor": request.yarn_factor,
        "reasoning_effort": request.reasoning_effort,
        "preserve_thinking": request.preserve_thinking,
        "tools": [dict(tool) for tool in request.tools],
        "raw_prompt": request.raw_prompt,
        "use_draft_model": request.use_draft_model,
        "use_mtp": request.use_mtp,
        "prompt_lookup": request.prompt_lookup,
    }


def request_from_json(data: dict[str, Any]) -> ChatRequest:
    sampling = data["sampling"]
    return ChatRequest(
        messages=tuple(_message_from_json(message) for message in data["messages"]),
        conversation_id=data["conversation_id"],
        enable_thinking=data["enable_thinking"],
        sampling=None if sampling is None else SamplingParams(
            temperature=sampling["temperature"],
            top_p=sampling["top_p"],
            top_k=sampling["top_k"],
            min_p=sampling["min_p"],
            presence_penalty=sampling["presence_penalty"],
        ),
        max_tokens=data["max_tokens"],
        stop=tuple(data["stop"]),
        seed=data["seed"],
        kv_bits=data["kv_bits"],
        yarn_factor=data["yarn_factor"],
        reasoning_effort=data["reasoning_effort"],
        preserve_thinking=data["preserve_thinking"],
        tools=tuple(data["tools"]),
        raw_prompt=data["raw_prompt"],
        use_draft_model=data["use_draft_model"],
        use_mtp=data["use_mtp"],
        prompt_lookup=data["prompt_lookup"],
    )


def _message_to_json(message: ChatMessage) -> dict[str, Any]:
    return {
        "role": message.role,
        "content": message.content,
        "tool_calls": [
            {"name": call.name, "arguments": call.arguments, "raw": call.raw} for call in message.tool_calls
        ],
    }


def _message_from_json(data: dict[str, Any]) -> ChatMessage:
    return ChatMessage(
        role=data["role"],
        content=data["content"],
        tool_calls=tuple(
            ToolCall(call["name"], call["arguments"], call["raw"]) for call in data["tool_calls"]
        ),
    )
