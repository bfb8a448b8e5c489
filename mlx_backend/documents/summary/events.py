"""What a summary run reports besides the engine's own events: its steps and part summaries."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mlx_backend.events import ChatRequest

Stage = Literal["single", "map", "reduce", "combine"]


@dataclass(frozen=True)
class SummaryProgress:
    """Which step of the plan runs now: ``part`` of ``parts`` in ``stage``.

    stage "single": the whole document in one request (part 1 of 1); "map": summarizing part
    ``part``; "reduce": merging group ``part`` of intermediate summaries; "combine": the final
    answer, which streams as ``AnswerDelta``.
    """

    part: int
    parts: int
    stage: Stage
    # How many documents the run covers, for the wording ("Reading the 3 documents").
    documents: int = field(default=1, compare=False)


@dataclass(frozen=True)
class PartWriting:
    """A part (or merge) summary is being written: ``tokens`` so far. Sent every few tokens so
    a progress display shows life while nothing streams to the chat."""

    tokens: int


@dataclass(frozen=True)
class PartSummary:
    """A finished part summary (map) or merged group (reduce), kept so the user can read them."""

    part: int
    parts: int
    stage: Stage
    text: str


@dataclass(frozen=True)
class SummaryRequestStarted:
    """The request whose answer is the summary. Follow-up questions extend ``request.messages``
    (see ``follow_up_request``) with the same conversation id, YaRN and KV settings."""

    request: ChatRequest
