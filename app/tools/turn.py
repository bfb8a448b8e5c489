"""Tools in a chat turn, for the chat controller: whether a turn uses them, its job, and the
bookkeeping of its calls (transcript blocks, store rows, the text of each step)."""

from __future__ import annotations

import dataclasses
import sqlite3
from typing import Any, Callable, Optional

import shiboken6
from PySide6.QtWidgets import QLabel

from app.chat.history import STEP_SEPARATOR
from app.chat.store import ConversationStore, StoredToolCall
from app.settings import Settings
from app.tools.approval import ApprovalBroker, ApprovalRequest
from app.tools.block import ToolBlock
from app.tools.job import ToolsUnavailable, tool_turn_job
from app.tools.service import ToolService
from app.worker.protocols import Job
from mlx_backend.events import ChatRequest, Finished, MalformedToolCall, ToolCallEvent
from mlx_backend.tools.loop import ToolCallFinished, ToolCallStarted, ToolLoopLimit

LIMIT_KEY = "tool_step_limit_reached"


def limit_words(steps: int) -> str:
    return f"Stopped after {steps} tool steps (the limit is in Settings \u203a Tools)."


class ChatTools:
    """One per window; shares the app's ToolService (one hub)."""

    def __init__(self, service: ToolService, settings: Settings, store: ConversationStore, broker: ApprovalBroker) -> None:
        self.service = service
        self.settings = settings
        self.store = store
        self.broker = broker

    def active(self) -> bool:
        # A broken mcp.json still takes the tools path, whose job says what is wrong.
        return self.settings.tools_enabled and (self.service.has_servers() or bool(self.service.config_error()))

    def job(self, request: ChatRequest) -> Job:
        self.broker.refresh_permissions()
        return tool_turn_job(request, self.service, self.broker.approve, self.settings.tool_step_limit)

    def begin(self, message_id: int, view: Callable[[], Any]) -> "ToolTurn":
        return ToolTurn(self, message_id, view)

    def calls(self, conversation_id: str) -> dict[int, list[StoredToolCall]]:
        return self.store.tool_calls(conversation_id)

    def show_stored(self, conversation_id: str, view_for: Callable[[int], Any], *, streaming: Optional[int] = None) -> None:
        """Blocks for the calls of every answer on screen (after the transcript was rebuilt);
        the answer still streaming (``streaming``) gets its live blocks from its ToolTurn."""
        for message_id, records in self.store.tool_calls(conversation_id).items():
            view = view_for(message_id)
            if view is None or message_id == streaming:
                continue
            for record in records:
                view.add_tool_widget(ToolBlock(record))
            message = self.store.message(message_id)
            steps = (message.stats or {}).get(LIMIT_KEY) if message else None
            if steps:
                view.add_tool_widget(_limit_note(int(steps)))

    def stop(self) -> None:
        self.broker.dismiss()


class ToolTurn:
    def __init__(self, tools: ChatTools, message_id: int, view: Callable[[], Any]) -> None:
        self._tools = tools
        self._message_id = message_id
        self._view = view
        self._step_has_calls = False
        self._answer_mark = 0
        self._thinking_mark = 0
        self._step_texts: dict[int, tuple[str, str]] = {}
        self._steps_done = 0
        self.records: dict[tuple[int, int], StoredToolCall] = {}
        self.blocks: dict[tuple[int, int], ToolBlock] = {}
        self._waiting: Optional[tuple[int, int]] = None
        tools.broker.dialogShown.connect(self._on_dialog)
        tools.broker.dialogClosed.connect(self._on_dialog_closed)

    def close(self) -> None:
        try:
            self._tools.broker.dialogShown.disconnect(self._on_dialog)
            self._tools.broker.dialogClosed.disconnect(self._on_dialog_closed)
        except (RuntimeError, TypeError):
            pass

    def step_finished(self, event: Finished, turn: Any) -> bool:
        """At each step's end: True when the loop goes on to run this step's calls."""
        continuing = self._step_has_calls and event.reason == "stop"
        if continuing:
            answer = turn.answer[self._answer_mark:]
            self._step_texts[self._steps_done] = (answer, turn.thinking[self._thinking_mark:])
            if answer:  # the next step's text starts on its own paragraph (history skips it)
                turn.answer += STEP_SEPARATOR
                view = self._view()
                if view is not None:
                    view.append_answer(STEP_SEPARATOR)
            self._answer_mark, self._thinking_mark = len(turn.answer), len(turn.thinking)
            self._steps_done += 1
        self._step_has_calls = False
        return continuing

    def on_event(self, event: object, turn: Any) -> bool:
        """Handle a tool event; False for an event that is not the tools' business."""
        if isinstance(event, ToolCallEvent):
            self._step_has_calls = True
            return True
        if isinstance(event, ToolCallStarted):
            self._save(event.step, event.index, self._record(event.step, event.index, event.call, status="running"))
            return True
        if isinstance(event, ToolCallFinished):
            outcome = event.outcome
            if isinstance(event.call, MalformedToolCall):
                record = dataclasses.replace(
                    self._record(event.step, event.index, None), raw=event.call.raw, status="malformed",
                    result=outcome.text,
                )
            else:
                record = self.records.get((event.step, event.index)) or self._record(event.step, event.index, event.call)
                status = "denied" if outcome.denied else "error" if outcome.is_error else "done"
                record = dataclasses.replace(
                    record, server=outcome.server or record.server, tool=outcome.tool or record.tool,
                    result=outcome.text, images=tuple((i.mime_type, i.data) for i in outcome.images),
                    status=status, duration_s=round(outcome.duration_s, 3),
                )
            self._save(event.step, event.index, record)
            return True
        if isinstance(event, ToolLoopLimit):
            turn.stats = {**(turn.stats or {}), LIMIT_KEY: event.max_steps}
            view = self._view()
            if view is not None:
                view.add_tool_widget(_limit_note(event.max_steps))
            return True
        if isinstance(event, ToolsUnavailable):
            turn.tool_notice = event.message
            view = self._view()
            if view is not None:  # the answer goes on without tools; say why, once
                note = QLabel(f"Tools are unavailable for this answer: {event.message}")
                note.setObjectName("ErrorNote")
                note.setWordWrap(True)
                view.add_tool_widget(note)
            return True
        return False

    def _record(self, step: int, index: int, call: Any, status: str = "running") -> StoredToolCall:
        answer, thinking = self._step_texts.get(step, ("", ""))
        return StoredToolCall(
            self._message_id, step, index, name=getattr(call, "name", ""), tool=getattr(call, "name", ""),
            arguments=dict(getattr(call, "arguments", {}) or {}), raw=getattr(call, "raw", ""), status=status,
            step_answer=answer, step_thinking=thinking,
        )

    def reattach(self) -> None:
        """The transcript was rebuilt (the user came back to this chat): live blocks again."""
        view = self._view()
        if view is None:
            return
        self.blocks = {}
        for key in sorted(self.records):
            self.blocks[key] = ToolBlock(self.records[key])
            view.add_tool_widget(self.blocks[key])

    def _save(self, step: int, index: int, record: StoredToolCall) -> None:
        key = (step, index)
        self.records[key] = record
        try:
            self._tools.store.save_tool_call(record)
        except sqlite3.IntegrityError:  # the chat was deleted mid-turn: nothing left to save to
            return
        block = self.blocks.get(key)
        if block is not None and not shiboken6.isValid(block):
            block = None  # its view was rebuilt (the user switched chats and back)
        view = self._view()
        if block is None or (view is not None and block.parent() is None):
            if view is None:
                self.blocks.pop(key, None)  # made again when the chat is on screen
            else:
                block = ToolBlock(record)
                self.blocks[key] = block
                view.add_tool_widget(block)
        else:
            block.update_record(record)
        if self._waiting == key and record.status != "running":
            self._waiting = None

    def _on_dialog(self, request: ApprovalRequest, _dialog: object) -> None:
        # The call waiting is the last one started that has not finished.
        for key in sorted(self.records, reverse=True):
            record = self.records[key]
            if record.status == "running" and record.name == request.call.name:
                self._waiting = key
                self._save(key[0], key[1], dataclasses.replace(record, server=request.server, tool=request.tool,
                                                               status="waiting"))
                return


    def _on_dialog_closed(self, _request: ApprovalRequest) -> None:
        key, self._waiting = self._waiting, None
        if key is not None and self.records[key].status == "waiting":
            self._save(key[0], key[1], dataclasses.replace(self.records[key], status="running"))


def _limit_note(steps: int) -> QLabel:
    note = QLabel(limit_words(steps))
    note.setObjectName("ToolLimitNote")
    note.setWordWrap(True)
    return note
