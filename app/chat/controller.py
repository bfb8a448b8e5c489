"""The chat logic between the window, the store and the worker (GUI thread, no widgets built here).

One turn at a time per window: ``send`` stores the user's message, creates the assistant's
message (status ``interrupted`` until it finishes normally, so a crash leaves it labelled
correctly), queues a job on the worker and streams its events into the transcript and, every
second, into the store.

Extension points for other features (documents):
- ``set_job_builder(builder)``: decide the job for a turn (e.g. summarise the attached documents)
  instead of a plain chat request; return None to fall back to chat. The builder's ``TurnJob``
  may name who wants the job's handle: that feature then follows its own job's events.
- ``send(text, attachments)``: a user message with attachment chips.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any, Iterable, Optional

from PySide6.QtCore import QObject, QTimer, Signal

from app.chat.chat_settings import (
    DEFAULT_MAX_TOKENS,
    ChatDefaults,
    ChatSettings,
    apply_chat_settings,
    effective_system_prompt,
    recommended_sampling,
)
from app.chat.history import history_messages
from app.chat.message_view import MessageView
from app.chat.reasoning import reasoning_options
from app.chat.store import Attachment, ConversationStore, StoredMessage
from app.chat.transcript import TranscriptView
from app.chat.turns import (
    JobBuilder,
    StreamingTurn,
    TurnContext,
    TurnJob,
    forget_conversation_job,
    last_prompt_tokens,
    title_from,
)
from app.settings import Settings, sampling_preset
from app.worker.batching import delta_count
from app.worker.protocols import JobRunner
from app.worker.worker import chat_job
from mlx_backend.events import (
    AnswerDelta,
    ChatRequest,
    Failed,
    Finished,
    PrefillProgress,
    ThinkingDelta,
)

SAVE_INTERVAL_MS = 1000
# How often the status bar's live figures (tokens/s, context) move while an answer streams.
LIVE_STATS_INTERVAL_S = 0.5
class ChatController(QObject):
    generatingChanged = Signal(bool)
    # Stats of the finished answer (GenerationStats fields, finish_reason, thinking_s).
    statsChanged = Signal(dict)
    # While an answer streams, about twice a second: prompt_tokens (once known),
    # generation_tokens, generation_tps and ttft_s as measured here so far.
    liveStatsChanged = Signal(dict)
    # The conversation shown changed (None: a new, unsaved chat).
    conversationChanged = Signal(object)
    # A conversation was created or retitled (the sidebar refreshes).
    conversationsChanged = Signal()
    # A turn ended: (conversation id, assistant message id, status).
    turnFinished = Signal(str, int, str)
    # The chat on screen got other settings (Chat Settings panel), or another chat was opened.
    chatSettingsChanged = Signal(object)

    def __init__(
        self,
        store: ConversationStore,
        worker: JobRunner,
        transcript: TranscriptView,
        settings: Settings,
        parent: Optional[QObject] = None,
    ) -> None:
        super().__init__(parent)
        self._store = store
        self._worker = worker
        self._transcript = transcript
        self._settings = settings
        self._conversation_id: Optional[str] = None
        self._turn: Optional[StreamingTurn] = None
        self._job_builder: Optional[JobBuilder] = None
        # Chat Settings chosen for a new chat before its first message (stored with it then).
        self._pending_settings = ChatSettings()
        self._tools: Any = None  # app.tools.turn.ChatTools, once attached
        self._save_timer = QTimer(self)
        self._save_timer.setInterval(SAVE_INTERVAL_MS)
        self._save_timer.timeout.connect(self._save_partial)
        transcript.regenerateRequested.connect(self.regenerate)
        transcript.editSubmitted.connect(self.edit_and_resend)
        transcript.versionChosen.connect(self.choose_version)

    # ------------------------------------------------------------- state
    @property
    def conversation_id(self) -> Optional[str]:
        return self._conversation_id

    @property
    def generating(self) -> bool:
        return self._turn is not None

    @property
    def streaming_conversation_id(self) -> Optional[str]:
        """The conversation whose answer is streaming (None: none is)."""
        return self._turn.conversation_id if self._turn is not None else None

    def set_job_builder(self, builder: Optional[JobBuilder]) -> None:
        self._job_builder = builder

    # -------------------------------------------------------- chat settings
    @property
    def chat_settings(self) -> ChatSettings:
        """The settings of the chat on screen (a new chat: those it will be created with)."""
        if self._conversation_id is None:
            return self._pending_settings
        conversation = self._store.conversation(self._conversation_id)
        return ChatSettings.from_json(conversation.settings if conversation else None)

    def set_chat_settings(self, chat: ChatSettings) -> None:
        if self._conversation_id is None:
            self._pending_settings = chat
        else:
            self._store.set_conversation_settings(self._conversation_id, chat.to_json())
        self.chatSettingsChanged.emit(chat)

    def set_tools(self, tools: Any) -> None:
        """Let turns call tools (``app.tools.turn.ChatTools``); None: never."""
        self._tools = tools

    # ------------------------------------------------------ conversations
    def open_conversation(self, conversation_id: Optional[str]) -> None:
        if conversation_id is not None and self._store.conversation(conversation_id) is None:
            conversation_id = None
        self._save_partial()  # what the store holds must match what the view rebuilds from
        self._conversation_id = conversation_id
        messages = self._store.messages(conversation_id) if conversation_id else []
        self._transcript.set_messages(messages)
        turn = self._turn
        streaming = turn.message_id if turn is not None and turn.conversation_id == conversation_id else None
        if self._tools is not None and conversation_id:
            self._tools.show_stored(conversation_id, self._transcript.view_for, streaming=streaming)
        if turn is not None and turn.conversation_id == conversation_id:
            view = self._transcript.view_for(turn.message_id)
            if view is not None:
                view.begin_streaming()  # the answer so far (saved above) and its reading row
                if turn.progress_label:
                    view.set_progress_shown_elsewhere(turn.progress_label)
                elif turn.prefill is not None:
                    view.show_prefill(*turn.prefill)
                if turn.answer or turn.thinking:
                    view.prefill_row.hide()
                if turn.tools is not None:
                    turn.tools.reattach()
        self._transcript.set_busy(self._turn is not None and self._turn.conversation_id == conversation_id)
        if conversation_id:
            self._settings.last_conversation = conversation_id
        else:
            self._pending_settings = ChatSettings()
        self.conversationChanged.emit(conversation_id)
        self.chatSettingsChanged.emit(self.chat_settings)

    def new_conversation(self) -> None:
        """An empty chat; it is stored when the first message is sent."""
        self.open_conversation(None)

    def conversation_deleted(self, conversation_id: str) -> None:
        if self._turn is not None and self._turn.conversation_id == conversation_id:
            self.stop()
        self._worker.submit(forget_conversation_job(conversation_id), needs_model=False, name="forget")
        if self._conversation_id == conversation_id:
            self.open_conversation(None)

    # ---------------------------------------------------------------- turns
    def send(self, text: str, attachments: Iterable[Attachment] = ()) -> Optional[int]:
        """Store a user message in the current conversation and answer it. Returns its id."""
        attachments = tuple(attachments)
        text = text.strip()
        if self._turn is not None or not (text or attachments):
            return None
        if self._conversation_id is None:
            title = title_from(text) if text else attachments[0].name
            conversation = self._store.create_conversation(title, model=self._worker.model_name or None)
            if not self._pending_settings.is_default:
                self._store.set_conversation_settings(conversation.id, self._pending_settings.to_json())
            self._pending_settings = ChatSettings()
            self._conversation_id = conversation.id
            self._settings.last_conversation = conversation.id
            self.conversationsChanged.emit()
            self.conversationChanged.emit(conversation.id)
        message = self._store.add_message(self._conversation_id, "user", text, attachments=attachments)
        self._transcript.add_message(message)
        self._start_turn()
        return message.id

    def regenerate(self, message_id: int) -> None:
        """Answer the last user message again. The answer ``message_id`` stays as an earlier
        version of this turn (‹ 1/2 ›) unless it holds nothing worth keeping (failed, empty)."""
        if self._turn is not None or self._conversation_id is None:
            return
        message = self._store.message(message_id)
        if message is None or message.role != "assistant" or message.conversation_id != self._conversation_id:
            return
        versions = set(message.version_ids) | {message_id}
        version_of: Optional[int] = message_id
        called_tools = bool(self._tools is not None and self._tools.calls(self._conversation_id).get(message_id))
        if message.status == "error" or not (message.content.strip() or message.thinking.strip() or called_tools):
            self._store.delete_message(message_id)
            kept = sorted(versions - {message_id})
            version_of = kept[-1] if kept else None
        self._transcript.remove_from(message_id)
        # The same prompt again: the replaced answer's prompt is this one's size.
        prompt_floor = int((message.stats or {}).get("prompt_tokens") or 0)
        self._start_turn(version_of=version_of, leave_out=versions, prompt_floor=prompt_floor)

    def choose_version(self, message_id: int) -> None:
        """Show (and from now on send) this version of its answer."""
        if self._turn is not None or self._conversation_id is None:
            return
        message = self._store.message(message_id)
        if message is None or message.conversation_id != self._conversation_id or not message.version_ids:
            return
        self._store.choose_version(message_id)
        chosen = self._store.message(message_id)
        shown = next((v for v in self._transcript.views if v.message_id in message.version_ids), None)
        if chosen is not None and shown is not None:
            self._transcript.replace_message(shown.message_id, chosen)

    def edit_and_resend(self, message_id: int, text: str) -> None:
        """Replace a user message (and everything after it) with ``text`` and answer it."""
        text = text.strip()
        if self._turn is not None or self._conversation_id is None or not text:
            return
        message = self._store.message(message_id)
        if message is None or message.role != "user" or message.conversation_id != self._conversation_id:
            return
        self._store.delete_messages_from(self._conversation_id, message_id)
        self._transcript.remove_from(message_id)
        replacement = self._store.add_message(self._conversation_id, "user", text, attachments=message.attachments)
        self._transcript.add_message(replacement)
        self._start_turn()

    def import_exchange(self, question: str, answer: str, *, stopped: bool = False) -> str:
        """Store a finished question and answer (e.g. from Quick Ask) as a new chat and open it;
        ``stopped``: the user stopped that answer (it keeps its label)."""
        conversation = self._store.create_conversation(title_from(question), model=self._worker.model_name or None)
        self._store.add_message(conversation.id, "user", question)
        self._store.add_message(conversation.id, "assistant", answer, model=self._worker.model_name or None,
                                status="interrupted" if stopped else "complete",
                                stats={"finish_reason": "cancelled"} if stopped else None)
        self.conversationsChanged.emit()
        self.open_conversation(conversation.id)
        return conversation.id

    def stop(self) -> bool:
        if self._turn is None:
            return False
        self._turn.cancel_requested = True
        if self._tools is not None:
            self._tools.stop()
        return self._turn.handle.cancel()

    def build_request(self, history: list[StoredMessage]) -> ChatRequest:
        """The chat request for ``history``: the app's settings, then this chat's own."""
        info = self._worker.model_info
        hybrid = getattr(info, "thinking_mode", "hybrid") == "hybrid"
        # Unset: the model's own default (sent as None, the template decides).
        thinking = self._settings.thinking_choice if hybrid else None
        thinks = thinking if thinking is not None else getattr(info, "thinks_by_default", True)
        reasoning = reasoning_options(
            info,
            effort=self._settings.reasoning_effort,
            history_reasoning=self._settings.history_reasoning,
            thinking=thinks if hybrid else None,
        )
        chat = self.chat_settings
        base_sampling = sampling_preset(self._settings.sampling_preset).params
        calls = self._tools.calls(self._conversation_id) if self._tools is not None and self._conversation_id else {}
        request = ChatRequest(
            messages=history_messages(self.system_prompt, history, tool_calls=calls),
            conversation_id=self._conversation_id,
            enable_thinking=thinking,
            sampling=base_sampling,
            reasoning_effort=reasoning.reasoning_effort,
            preserve_thinking=reasoning.preserve_thinking,
            # The model's "Quote-aware drafting for documents" (Models window): per request, so
            # switching it needs no reload.
            prompt_lookup=self._settings.speed_up(self._worker.model_name).prompt_lookup,
        )
        return apply_chat_settings(
            request, chat, thinking=self._thinks(), base_sampling=base_sampling,
            can_extend=bool(getattr(info, "yarn_context_length", None)))

    def _thinks(self) -> bool:
        """Will the next answer think (the switch, else the loaded model's own default)?"""
        info = self._worker.model_info
        mode = getattr(info, "thinking_mode", "hybrid")
        if mode != "hybrid":
            return mode == "always"
        choice = self._settings.thinking_choice
        return choice if choice is not None else bool(getattr(info, "thinks_by_default", True))

    def chat_defaults(self) -> ChatDefaults:
        """What the chat on screen gets where it has no settings of its own (Chat Settings)."""
        info = self._worker.model_info
        preset = sampling_preset(self._settings.sampling_preset).params
        thinks = self._thinks()
        conversation = self._store.conversation(self._conversation_id) if self._conversation_id else None
        return ChatDefaults(
            system_prompt=self._settings.system_prompt,
            sampling=preset or recommended_sampling(thinks),
            thinking=thinks,
            recommended=preset is None,
            max_tokens=DEFAULT_MAX_TOKENS,
            native_context=getattr(info, "context_length", None),
            long_context=getattr(info, "yarn_context_length", None),
            model=self._last_model(conversation.model if conversation else None),
        )

    def _last_model(self, fallback: Optional[str]) -> Optional[str]:
        if self._conversation_id:
            for message in reversed(self._store.messages(self._conversation_id)):
                if message.role == "assistant" and message.model:
                    return message.model
        return fallback

    @property
    def system_prompt(self) -> str:
        """The system prompt of the chat on screen: its own, else the app's."""
        return effective_system_prompt(self.chat_settings, self._settings.system_prompt)

    def _start_turn(
        self, *, version_of: Optional[int] = None, leave_out: frozenset[int] | set[int] = frozenset(), prompt_floor: int = 0
    ) -> None:
        assert self._conversation_id is not None
        # Regenerating: the answers being redone are not part of what is answered.
        history = [m for m in self._store.messages(self._conversation_id) if m.id not in leave_out]
        request = self.build_request(history)
        turn_job: Optional[TurnJob] = None
        if self._job_builder is not None:
            calls = self._tools.calls(self._conversation_id) if self._tools is not None else {}
            context = TurnContext(self._conversation_id, tuple(history), request, self.system_prompt, calls)
            turn_job = self._job_builder(context)
        with_tools = turn_job is None and self._tools is not None and self._tools.active()
        if turn_job is None:
            turn_job = TurnJob(self._tools.job(request) if with_tools else chat_job(request))
        model = self._worker.model_name or None
        placeholder = self._store.add_message(self._conversation_id, "assistant", "", status="interrupted",
                                              model=model, version_of=version_of)
        if model:
            self._store.set_conversation_model(self._conversation_id, model)
        view = self._transcript.add_message(placeholder)
        view.begin_streaming()
        if turn_job.progress_label:
            view.set_progress_shown_elsewhere(turn_job.progress_label)
        handle = self._worker.submit(turn_job.job, name="chat")
        turn = StreamingTurn(handle, self._conversation_id, placeholder.id, prompt_floor=max(prompt_floor, last_prompt_tokens(history)))
        turn.progress_label = turn_job.progress_label
        if with_tools:
            turn.tools = self._tools.begin(placeholder.id, lambda: self._view() if self._turn is turn else None)
        handle.started.connect(lambda: self._on_job_started(turn))
        handle.event.connect(lambda event: self._on_job_event(turn, event))
        handle.failed.connect(lambda message: self._on_job_failed(turn, message))
        handle.finished.connect(lambda: self._on_job_finished(turn))
        self._turn = turn
        self._transcript.set_busy(True)
        self._save_timer.start()
        self.generatingChanged.emit(True)
        if turn_job.on_submitted is not None:
            turn_job.on_submitted(handle)

    # --------------------------------------------------------------- events
    def _view(self) -> Optional[MessageView]:
        turn = self._turn
        if turn is None or turn.conversation_id != self._conversation_id:
            return None
        return self._transcript.view_for(turn.message_id)

    def _on_job_started(self, turn: StreamingTurn) -> None:
        turn.started_at = time.monotonic()

    def _on_job_event(self, turn: StreamingTurn, event: object) -> None:
        if turn is not self._turn:
            return  # completed at its Finished event; the job's tail is not the user's concern
        view = self._view()
        if turn.tools is not None and turn.tools.on_event(event, turn):
            return
        if isinstance(event, (AnswerDelta, ThinkingDelta)):
            self._count_deltas(turn, delta_count(event))
        if isinstance(event, AnswerDelta):
            if turn.thinking_started_at is not None and turn.thinking_s is None:
                turn.thinking_s = time.monotonic() - turn.thinking_started_at
            turn.answer += event.text
            turn.dirty = True
            if view:
                view.append_answer(event.text)
        elif isinstance(event, ThinkingDelta):
            if turn.thinking_started_at is None:
                turn.thinking_started_at = time.monotonic()
            turn.thinking += event.text
            turn.dirty = True
            if view:
                view.append_thinking(event.text)
        elif isinstance(event, PrefillProgress):
            turn.prefill = (event.done, event.total, event.eta_s)
            if turn.reading_started_at is None:
                turn.reading_started_at = time.monotonic()
            if view:
                view.show_prefill(event.done, event.total, event.eta_s)
            if turn.prompt_tokens is None and event.total > 0:
                # ``total`` leaves out what the prompt cache already holds: never below the
                # previous prompt, which this one contains.
                turn.prompt_tokens = max(event.total, turn.prompt_floor)
                self._emit_live_stats(turn, force=True)
        elif isinstance(event, Finished):
            turn.finish_reason = event.reason
            turn.stats = {**dataclasses.asdict(event.stats), "finish_reason": event.reason}
            if turn.tools is not None and turn.tools.step_finished(event, turn):
                turn.finish_reason = None  # the loop runs this step's calls and goes on
                return
            # The answer is complete now. The job may go on a little (the engine re-encodes the
            # reply into the conversation's cache for the next turn); the user needn't wait.
            self._complete_turn(turn)
        elif isinstance(event, Failed):
            turn.error = event.message

    def _count_deltas(self, turn: StreamingTurn, count: int) -> None:
        now = time.monotonic()
        first = turn.first_delta_at is None
        if first:
            turn.first_delta_at = now
        turn.deltas += count
        self._emit_live_stats(turn, force=first)

    def _emit_live_stats(self, turn: StreamingTurn, *, force: bool = False) -> None:
        now = time.monotonic()
        if turn.conversation_id != self._conversation_id:
            return  # the status bar speaks for the chat on screen
        if not force and now - turn.live_emitted_at < LIVE_STATS_INTERVAL_S:
            return
        turn.live_emitted_at = now
        stats: dict[str, Any] = {"generation_tokens": turn.deltas}
        if turn.prompt_tokens is not None:
            stats["prompt_tokens"] = turn.prompt_tokens
        if turn.first_delta_at is not None:
            # Timed like the engine's: from when it began reading this prompt.
            stats["ttft_s"] = turn.first_delta_at - (turn.reading_started_at or turn.started_at)
            elapsed = now - turn.first_delta_at
            if turn.deltas > 1 and elapsed > 0:
                # Like the engine: the tokens after the first over the time they took.
                stats["generation_tps"] = (turn.deltas - 1) / elapsed
        self.liveStatsChanged.emit(stats)

    def _on_job_failed(self, turn: StreamingTurn, message: str) -> None:
        if turn is self._turn:
            turn.error = message

    def _on_job_finished(self, turn: StreamingTurn) -> None:
        if turn is self._turn:  # else already completed at its Finished event
            self._complete_turn(turn)

    def _complete_turn(self, turn: StreamingTurn) -> None:
        if turn.thinking_started_at is not None and turn.thinking_s is None:
            turn.thinking_s = time.monotonic() - turn.thinking_started_at
        if turn.error or turn.finish_reason == "error":
            status = "error"
        elif turn.finish_reason == "cancelled" or (turn.cancel_requested and turn.finish_reason is None):
            status = "interrupted"
        else:
            status = "complete"
        stats = dict(turn.stats or {})
        if status == "interrupted":
            # The user stopped it: "Stopped". A kill leaves no finish reason: "Interrupted".
            stats["finish_reason"] = "cancelled"
        if turn.thinking_s is not None:
            stats["thinking_s"] = round(turn.thinking_s, 2)
        self._store.update_message(
            turn.message_id,
            content=turn.answer,
            thinking=turn.thinking,
            status=status,  # type: ignore[arg-type]
            stats=stats or None,
            error=turn.error or ("The answer failed." if status == "error" else ""),
        )
        view = self._view()
        if turn.tools is not None:
            turn.tools.close()
        self._turn = None
        self._save_timer.stop()
        if view is not None:
            view.finish(status, stats or None, turn.error)
        if turn.conversation_id == self._conversation_id:
            self._transcript.set_busy(False)
        self.generatingChanged.emit(False)
        if stats and turn.conversation_id == self._conversation_id:  # the status bar speaks for the chat on screen
            self.statsChanged.emit(stats)
        self.turnFinished.emit(turn.conversation_id, turn.message_id, status)

    def _save_partial(self) -> None:
        turn = self._turn
        if turn is None or not turn.dirty:
            return
        self._store.update_message(turn.message_id, content=turn.answer, thinking=turn.thinking)
        turn.dirty = False

    def flush(self) -> None:
        """Save the streaming answer now (before quitting)."""
        self._save_partial()
