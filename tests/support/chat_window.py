"""A main window over a real engine on a tiny checkpoint, with every request the engine gets
written down: for tests of what the chat sends (settings, versions) and of restarts."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from PySide6.QtCore import QSettings

from app.chat.store import ConversationStore
from app.settings import Settings
from app.window.main_window import MainWindow
from app.worker.worker import WorkerClient
from mlx_backend.events import AnswerDelta, SamplingParams

TIMEOUT_MS = 60_000
ARGMAX = SamplingParams(temperature=0.0, top_p=1.0, top_k=0)


class RecordingEngine:
    """The real engine; each request is written down as the app sent it, then run with argmax
    and ``answer_tokens`` (a list: one cap per request, the last one repeating) so answers are
    short, repeatable and, with different caps, different."""

    def __init__(self, engine, answer_tokens: list[int]) -> None:
        self._engine = engine
        self.requests = []
        self.answer_tokens = answer_tokens

    def __getattr__(self, name):
        return getattr(self._engine, name)

    def stream(self, request, cancel=None):
        self.requests.append(request)
        cap = self.answer_tokens[min(len(self.requests), len(self.answer_tokens)) - 1]
        run = dataclasses.replace(request, sampling=ARGMAX, max_tokens=cap)
        for event in self._engine.stream(run, cancel):
            yield event


class ChatWindow:
    """One "launch" of the app on ``folder``'s database and settings file."""

    def __init__(self, qtbot, folder: Path, checkpoint: Path, *, answer_tokens: Optional[list[int]] = None) -> None:
        from mlx_backend.generation.engine import Engine

        self.qtbot = qtbot
        self.recorder: Optional[RecordingEngine] = None
        caps = answer_tokens or [6]

        def loader(path, progress):
            self.recorder = RecordingEngine(Engine.load(path), caps)
            return self.recorder

        self.worker = WorkerClient(engine_loader=loader, batch_interval_s=0.0)
        self.store = ConversationStore(folder / "chats.db")
        self.settings = Settings(QSettings(str(folder / "settings.ini"), QSettings.Format.IniFormat))
        self.window = MainWindow(self.store, self.worker, self.settings)
        self.window.sidebar.confirm_delete = False
        qtbot.addWidget(self.window)
        self.window.resize(900, 700)
        self.window.show()
        self.checkpoint = checkpoint
        with qtbot.waitSignal(self.worker.modelLoaded, timeout=TIMEOUT_MS):
            self.worker.load_model(str(checkpoint))

    @property
    def chat(self):
        return self.window.chat

    def send(self, text: str) -> None:
        with self.qtbot.waitSignal(self.chat.turnFinished, timeout=TIMEOUT_MS):
            self.window.composer.set_text(text)
            self.window.composer.submit()

    def regenerate_last(self) -> None:
        with self.qtbot.waitSignal(self.chat.turnFinished, timeout=TIMEOUT_MS):
            self.window.regenerate_last()

    def messages(self):
        return self.store.messages(self.chat.conversation_id)

    def assistant_views(self):
        return [v for v in self.window.transcript.views if v.role == "assistant"]

    def close(self) -> None:
        self.window.close()
        self.worker.shutdown()
        self.store.close()
