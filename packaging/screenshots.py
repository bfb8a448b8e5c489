"""Screenshots of the real windows, for the README and for review.

One script, one job (staging each view the README shows with a scripted fake engine), hence its
length: each view's setup reads top to bottom next to the others.

    make screenshots        # or: .venv/bin/python packaging/screenshots.py [--out screenshots]

Runs under Xvfb (re-executing itself through ``xvfb-run`` when there is no display), with a
throw-away data folder and settings. Everything on screen is the real app (WorkerClient,
ChatController, DocumentController, widgets); only the engine is a scripted stand-in, paused
at a fixed point, so every picture is the same on every run. Writes:

- main-window-light.png, main-window-dark.png: mid-answer, with the thinking block open
- model-manager.png: the Models window
- settings.png: the Settings window (Cmd+,)
- documents-plan.png: a PDF just dropped: its chip and the plan panel, before Summarize
- documents-progress.png: that PDF being summarized part by part (progress panel, ETA)
- quick-ask-light.png, quick-ask-dark.png: the menu-bar popup (packaging/quick_ask_screenshot.py)
- reasoning-effort.png, reasoning-menu.png: a Qwen3.8 model's Effort popup in the top bar, and
  its menu open (effort levels, earlier answers' reasoning)
- answer-code-{light,dark}[-small].png: highlighted code blocks with their Copy buttons
- answer-math-{light,dark}[-small].png: LaTeX, an aligned table and a block quote
  (``--only markdown`` takes just these; ``-small`` is an 800x500 window)
- models-*.png, picker-*.png (``--only models``): the Models window (800 x 500 and full size, a
  just-added folder, no models) and the model picker (none, loading, its menu), light and dark
- tools-*.png (``--only tools``): the tool approval dialog, a transcript with a finished tool block,
  the Tools section of Settings
- ux-*.png (``--only ux``): the composer's paperclip and the drop highlight, Send waiting for a
  model, a document plan in an 800x500 window, and the Window menu's Quick Ask; light and dark
- chat-settings-{light,dark}[-small].png: the Chat Settings sheet (Cmd+;) with Advanced open,
  over the window (full size, and -small: 800x500)
- answer-versions-{light,dark}[-small].png: a regenerated answer with its ‹ 2/2 › arrows, the
  model that wrote it beside its stats, and a pinned chat in the sidebar

``--only chat-history`` writes just the last two groups.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

QUESTION = "What's the difference between a list and a tuple in Python? Show me when to use each."
THINKING = (
    "The user wants the practical difference between lists and tuples. Key points: mutability, "
    "hashability (tuples can be dict keys), a small performance and memory edge for tuples, and "
    "the convention that tuples hold fixed records while lists hold collections of like items. "
    "A short code example for each would help, then a one-line rule of thumb."
)
ANSWER = """Both hold ordered sequences, but they make different promises:

| | **list** | **tuple** |
|---|---|---|
| Mutable | yes | no |
| Hashable (dict key) | no | yes, if its items are |
| Typical use | a collection that grows | a fixed record |

Use a **list** when the contents change:

```python
tasks = ["write report", "review PR"]
tasks.append("ship release")
```

Use a **tuple** for a record whose shape is fixed, such as a point or an RGB colour:

```python
origin = (0, 0)
cache = {origin: "home"}   # tuples can be dict keys
```

Rule of thumb: if you would never call `append` on it, make it a tuple"""
# Where the scripted answer pauses for the picture (characters of ANSWER already shown).
PAUSE_AT = len(ANSWER) - 120

HISTORY = (
    ("Summarise the Q3 planning notes", "Here are the key points from the Q3 planning notes: ..."),
    ("Regex for ISO dates", "Use `^\\d{4}-\\d{2}-\\d{2}$` and validate the month and day separately."),
    ("Plan a 3-day trip to Kyoto", "Day 1: Fushimi Inari early, then Gion in the evening. ..."),
    ("Explain attention like I'm five", "Imagine reading a sentence and highlighting the words that matter..."),
)


@dataclass(frozen=True)
class DemoInfo:
    name: str = "Qwen3-8B-4bit"
    model_type: str = "qwen3"
    context_length: int = 40960
    yarn_context_length: int = 131072
    thinking_mode: str = "hybrid"
    weights_bytes: int = 4_610_000_000
    num_layers: int = 36
    quantization_bits: int = 4
    reasoning_efforts: tuple[str, ...] = ()
    can_preserve_thinking: bool = False
    preserves_thinking_by_default: bool = False


# Qwen3.8's template takes an effort level and keeps earlier reasoning unless told not to.
QWEN38_INFO = DemoInfo(name="Qwen3.8-27B-4bit", model_type="qwen3_5", context_length=262144,
                       yarn_context_length=None, weights_bytes=15_200_000_000, num_layers=64,
                       reasoning_efforts=("xhigh", "medium", "low"), can_preserve_thinking=True,
                       preserves_thinking_by_default=True)


class DemoEngine:
    """Streams THINKING then ANSWER, then holds mid-answer until cancelled (or released)."""

    info = DemoInfo()

    def __init__(self) -> None:
        self.release = threading.Event()

    def stream(self, request, cancel: threading.Event) -> Iterator[object]:
        from mlx_backend import AnswerDelta, Finished, GenerationStats, PrefillProgress, ThinkingDelta

        yield PrefillProgress(0, 412, None)
        time.sleep(0.3)  # a believable time to first token on the status bar
        yield PrefillProgress(412, 412, 0.0)
        for word in _words(THINKING):
            time.sleep(0.03)  # long enough for a believable "Thought for ..." header
            yield ThinkingDelta(word)
        shown, paused = 0, False
        for word in _words(ANSWER):
            if cancel.is_set():
                break
            shown += len(word)
            pausing = shown >= PAUSE_AT and not paused
            # Before pausing, wait out the worker's batching interval so this word is delivered.
            time.sleep(0.06 if pausing else 0.025)  # about an 8B model's pace on a laptop
            yield AnswerDelta(word)
            if pausing:
                paused = True
                while not (cancel.is_set() or self.release.is_set()):
                    time.sleep(0.01)
        stats = GenerationStats(412, 0, 268, 0.41, 1830.0, 38.6, 5.2)
        yield Finished("cancelled" if cancel.is_set() else "stop", stats)


# --- documents ---------------------------------------------------------------------------------

DOCUMENT_NAME = "Annual-Report-2024.pdf"
DOCUMENT_PAGES = 160
# The summary job's engine call that holds mid-prefill for the picture (parts 1 and 2 are done).
DOCUMENT_PAUSE_CALL = 3
DOCUMENT_PAUSE_FRACTION = 0.45
DOCUMENT_PART_SECONDS = 26.0  # how long each part "took", on the progress panel's clock
PART_SUMMARY = "Revenue grew 12% on subscription sales; costs rose with the new data centre."

# Qwen3-8B's config.json (4-bit MLX conversion): what the summary planner sizes memory from.
QWEN3_8B_4BIT_CONFIG = {
    "model_type": "qwen3", "hidden_size": 4096, "intermediate_size": 12288, "num_hidden_layers": 36,
    "num_attention_heads": 32, "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936,
    "max_position_embeddings": 40960, "rope_theta": 1000000, "tie_word_embeddings": False,
    "torch_dtype": "bfloat16", "quantization": {"group_size": 64, "bits": 4},
}
# A 16 GB Mac, with the share of memory the model manager's screenshot assumes too.
DEMO_BUDGET_BYTES = int(16 * 2**30 * 0.67)


class WordTokenizer:
    """A deterministic stand-in for the Qwen3 tokenizer: one token per word or punctuation mark
    (English prose runs about that rate), with just the methods the summary planner calls."""

    _PIECES = re.compile(r"\s*\w+|\s*[^\w\s]|\s+")

    def __init__(self) -> None:
        self._ids: dict[str, int] = {}
        self._pieces: list[str] = []

    def encode(self, text: str) -> list[int]:
        ids = []
        for piece in self._PIECES.findall(text):
            if piece not in self._ids:
                self._ids[piece] = len(self._pieces)
                self._pieces.append(piece)
            ids.append(self._ids[piece])
        return ids

    def encode_batch(self, texts: list[str]) -> list[list[int]]:
        return [self.encode(text) for text in texts]

    def decode(self, ids: list[int]) -> str:
        return "".join(self._pieces[i] for i in ids)

    def apply_chat_template(self, messages, *, add_generation_prompt: bool = True, enable_thinking=None,
                            tokenize: bool = True, **_: object):
        def part(message) -> str:
            role, content = (message["role"], message["content"]) if isinstance(message, dict) else (
                message.role, message.content)
            return f"<|im_start|>{role}\n{content}<|im_end|>\n"

        text = "".join(part(m) for m in messages) + ("<|im_start|>assistant\n" if add_generation_prompt else "")
        return self.encode(text) if tokenize else text


class DocumentDemoEngine:
    """Answers each summary request with a short part summary; the third request holds
    mid-prefill until cancelled. Its clock is what the progress panel's ETA is timed by."""

    info = DemoInfo()
    model = SimpleNamespace(load_info=SimpleNamespace(config=QWEN3_8B_4BIT_CONFIG))

    def __init__(self) -> None:
        self.tokenizer = WordTokenizer()
        self.calls = 0
        self.now = 1000.0
        self.holding = threading.Event()

    def clock(self) -> float:
        return self.now

    def stream(self, request, cancel: threading.Event) -> Iterator[object]:
        from mlx_backend import AnswerDelta, Finished, GenerationStats, PrefillProgress

        self.calls += 1
        total = len(self.tokenizer.apply_chat_template(list(request.messages)))
        stats = GenerationStats(total, 0, 24, 9.8, 2400.0, 36.0, 7.9)
        yield PrefillProgress(0, total, None)
        if self.calls == DOCUMENT_PAUSE_CALL:
            done = int(total * DOCUMENT_PAUSE_FRACTION)
            yield PrefillProgress(done, total, DOCUMENT_PART_SECONDS * (1 - DOCUMENT_PAUSE_FRACTION) * 0.8)
            self.holding.set()
            cancel.wait()
            yield Finished("cancelled", stats)
            return
        self.now += DOCUMENT_PART_SECONDS
        yield PrefillProgress(total, total, 0.0)
        for word in _words(PART_SUMMARY):
            yield AnswerDelta(word)
        yield Finished("stop", stats)


def write_demo_pdf(folder: Path) -> Path:
    """A long report, as a real PDF the app reads with its own extractor."""
    from tests.support.documents import sample_paragraph, write_pdf

    pages = []
    for page in range(DOCUMENT_PAGES):
        lines = []
        for paragraph in range(6):
            text = sample_paragraph(page * 6 + paragraph, words=110)
            lines += [text[i:i + 95] for i in range(0, len(text), 95)] + [""]
        pages.append(lines)
    return write_pdf(folder / DOCUMENT_NAME, pages)


def capture_documents(out_dir: Path, store, settings) -> list[Path]:
    """A PDF dropped on a new chat: the plan panel, then the summary running part by part."""
    from app.documents.controller import DocumentController
    from app.window.main_window import MainWindow
    from app.worker.worker import WorkerClient
    from mlx_backend.documents.summary import SummaryOptions

    engine = DocumentDemoEngine()
    worker = WorkerClient(engine_loader=lambda path, progress: engine)
    window = MainWindow(store, worker, settings)
    documents = DocumentController(window.chat, window.composer, worker, drop_targets=(window.transcript,),
                                   place_panel=window.add_bottom_panel, system_prompt=lambda: settings.system_prompt,
                                   options=SummaryOptions(budget_bytes=DEMO_BUDGET_BYTES), clock=engine.clock,
                                   parent=window)
    window.resize(1180, 860)
    window.show()
    written: list[Path] = []
    try:
        worker.load_model("mlx-community/Qwen3-8B-4bit")
        _wait(lambda: worker.model_info is not None)
        window.new_chat()
        with tempfile.TemporaryDirectory(prefix="qwen-desk-doc-") as folder:
            pdf = write_demo_pdf(Path(folder))
            documents.open_files([str(pdf)])
            _wait(lambda: documents.plan_panel.plan is not None, timeout_s=60)
            _settle(400)
            written.append(out_dir / "documents-plan.png")
            window.grab().save(str(written[-1]))

            documents.start()
            _wait(engine.holding.is_set, timeout_s=60)
            _settle(600)
            written.append(out_dir / "documents-progress.png")
            window.grab().save(str(written[-1]))
        window.chat.stop()
        _wait(lambda: not window.chat.generating)
    finally:
        window.close()
        worker.shutdown()
    return written


class ReasoningDemoEngine:
    info = QWEN38_INFO

    def stream(self, request, cancel: threading.Event) -> Iterator[object]:
        return iter(())


def capture_reasoning(out_dir: Path, store, settings) -> list[Path]:
    """A Qwen3.8 model loaded: the top bar's Effort popup, and its menu open."""
    from PySide6.QtCore import QPoint

    from app.window.main_window import MainWindow
    from app.worker.worker import WorkerClient

    worker = WorkerClient(engine_loader=lambda path, progress: ReasoningDemoEngine())
    settings.model = "mlx-community/Qwen3.8-27B-4bit"
    settings.reasoning_effort = "medium"
    window = MainWindow(store, worker, settings)
    window.resize(1180, 860)
    window.show()
    written: list[Path] = []
    try:
        worker.load_model(settings.model)
        _wait(lambda: worker.model_info is not None and window.reasoning_button.isVisible())
        chat = next(c for c in store.conversations() if c.title == HISTORY[2][0])
        window.chat.open_conversation(chat.id)
        _settle(400)
        written.append(out_dir / "reasoning-effort.png")
        window.grab().save(str(written[-1]))
        button = window.reasoning_button
        menu = button.menu()
        menu.popup(button.mapToGlobal(QPoint(0, button.height())))
        _settle(400)
        written.append(out_dir / "reasoning-menu.png")
        menu.grab().save(str(written[-1]))
        menu.hide()
    finally:
        window.close()
        worker.shutdown()
    return written


CODE_QUESTION = "Parse a date in Python and in Rust"
CODE_ANSWER = """In Python, `datetime.fromisoformat` reads ISO dates:

```python
from datetime import date

def parse(text: str) -> date:
    \"\"\"Read YYYY-MM-DD; raise ValueError otherwise.\"\"\"
    return date.fromisoformat(text.strip())  # strict

print(parse("2026-12-02").year, 3 * 7, None)
```

In Rust, with `chrono`:

```rust
use chrono::NaiveDate;

fn parse(text: &str) -> Result<NaiveDate, chrono::ParseError> {
    NaiveDate::parse_from_str(text.trim(), "%Y-%m-%d") // strict
}
```

Both reject `2026-02-30`."""
MATH_QUESTION = "Explain the Gaussian integral"
MATH_ANSWER = r"""The key identity is $\int_{-\infty}^{\infty} e^{-x^2}\,dx = \sqrt{\pi}$, found by squaring:

$$
I^2 = \int_0^{2\pi}\!\int_0^\infty e^{-r^2}\, r \, dr\, d\theta = \pi
$$

| Distribution | Mean | Variance |
|:-------------|:----:|---------:|
| Normal $\mathcal{N}(\mu, \sigma^2)$ | $\mu$ | $\sigma^2$ |
| Standard normal | 0 | 1 |
| Exponential \(\lambda\) | $1/\lambda$ | $1/\lambda^2$ |

> The trick is to turn one hard integral in one variable into an *easy* one in two.
> Polar coordinates do the rest.

So the density $\frac{1}{\sqrt{2\pi}} e^{-x^2/2}$ integrates to 1."""


def capture_markdown(out_dir: Path, store, settings, theme) -> list[Path]:
    """Stored answers with code, math, a table and a quote, at full size and 800x500, light and dark."""
    from PySide6.QtWidgets import QApplication

    from app.window.main_window import MainWindow
    from app.worker.worker import WorkerClient

    worker = WorkerClient(engine_loader=lambda path, progress: ReasoningDemoEngine())
    window = MainWindow(store, worker, settings, theme_manager=theme)
    theme.changed.connect(window.apply_theme)
    written: list[Path] = []
    chats = {}
    for name, question, answer in (("code", CODE_QUESTION, CODE_ANSWER), ("math", MATH_QUESTION, MATH_ANSWER)):
        conversation = store.create_conversation(question)
        store.add_message(conversation.id, "user", question)
        store.add_message(conversation.id, "assistant", answer)
        chats[name] = conversation.id
    try:
        window.show()
        window.sidebar.refresh()
        for size, suffix in (((1180, 860), ""), ((800, 500), "-small")):
            window.resize(*size)
            for name, conversation_id in chats.items():
                window.chat.open_conversation(conversation_id)
                for look in ("light", "dark"):
                    theme.set_theme(look)
                    _settle(400)
                    QApplication.processEvents()
                    bar = window.transcript.verticalScrollBar()
                    # The small window shows the answer's first screenful, under the question.
                    answer = window.transcript.views[-1]
                    bar.setValue(min(bar.maximum(), max(0, answer.y() - 40)) if suffix else bar.maximum())
                    _settle(200)
                    written.append(out_dir / f"answer-{name}-{look}{suffix}.png")
                    window.grab().save(str(written[-1]))
    finally:
        theme.set_theme("light")
        window.close()
        worker.shutdown()
    return written


def _words(text: str) -> list[str]:
    parts = text.split(" ")
    return [p + " " for p in parts[:-1]] + [parts[-1]]


def _wait(predicate, timeout_s: float = 10.0) -> None:
    from PySide6.QtWidgets import QApplication

    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the window did not reach the expected state: {_debug()}")
        QApplication.processEvents()
        time.sleep(0.005)


_DEBUG_WINDOW = []


def _debug() -> str:
    if not _DEBUG_WINDOW:
        return "no window"
    window = _DEBUG_WINDOW[0]
    return "; ".join(f"{v.role}: {len(v.answer_text)} chars, note={v.note.text() if v.role == 'assistant' else ''}" for v in window.transcript.views)


def _settle(ms: int = 300) -> None:
    from PySide6.QtWidgets import QApplication

    end = time.monotonic() + ms / 1000
    while time.monotonic() < end:
        QApplication.processEvents()
        time.sleep(0.01)


def capture(out_dir: Path, only: str = "") -> list[Path]:
    from PySide6.QtWidgets import QApplication

    from app.gui import configure_application_identity
    from app.window.main_window import MainWindow
    from app.models.installed import InstalledModel
    from app.models.manager import ModelManager
    from app.settings import Settings
    from app.chat.store import ConversationStore
    from app.window.theme import ThemeManager
    from app.worker.worker import WorkerClient

    configure_application_identity()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    theme = ThemeManager(app, "light")
    written: list[Path] = []

    data = Path(os.environ["QWEN_DESK_DATA_DIR"])
    store = ConversationStore(data / "conversations.sqlite3")
    now = time.time()
    for index, (question, answer) in enumerate(HISTORY):
        conversation = store.create_conversation(question)
        store.add_message(conversation.id, "user", question)
        store.add_message(conversation.id, "assistant", answer)
        store._db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now - 3600 * (index + 1), conversation.id))
    settings = Settings()
    settings.model = "mlx-community/Qwen3-8B-4bit"
    settings.thinking_enabled = True
    if only == "markdown":
        written = capture_markdown(out_dir, store, settings, theme)
        store.close()
        return written
    engine = DemoEngine()
    worker = WorkerClient(engine_loader=lambda path, progress: engine)

    def fake_installed() -> list[InstalledModel]:
        hf = Path.home() / ".cache/huggingface/hub"
        return [
            InstalledModel("mlx-community/Qwen3-8B-4bit", "Qwen3-8B-4bit", hf, 4_610_000_000, "cache"),
            InstalledModel("mlx-community/Qwen3-4B-Instruct-2507-4bit", "Qwen3-4B-Instruct-2507-4bit", hf, 2_260_000_000, "cache"),
        ]

    window = MainWindow(
        store,
        worker,
        settings,
        theme_manager=theme,
        model_manager_factory=lambda parent: ModelManager(
            settings, parent, budget_bytes=int(16 * 2**30 * 0.67), installed_models=fake_installed
        ),
    )
    _DEBUG_WINDOW.append(window)
    theme.changed.connect(window.apply_theme)
    window.resize(1180, 860)
    window.show()
    window.sidebar.refresh()
    worker.load_model("mlx-community/Qwen3-8B-4bit")
    _wait(lambda: worker.model_info is not None)
    window.composer.set_text(QUESTION)
    window.composer.submit()
    _wait(lambda: _shown_answer(window) >= PAUSE_AT)
    _settle(600)
    answer_view = [v for v in window.transcript.views if v.role == "assistant"][-1]
    answer_view.thinking.set_expanded(True)  # show the reasoning apart from the answer
    _settle(300)

    for name in ("light", "dark"):
        theme.set_theme(name)
        _settle(400)
        path = out_dir / f"main-window-{name}.png"
        window.grab().save(str(path))
        written.append(path)

    theme.set_theme("light")
    manager = window.open_model_manager()
    manager.resize(760, 600)
    _settle(400)
    path = out_dir / "model-manager.png"
    manager.grab().save(str(path))
    written.append(path)
    manager.hide()

    settings.system_prompt = "Answer briefly. Use British spelling."
    # As on a Mac, where the menu-bar icon and global shortcuts exist (Xvfb has neither).
    window.set_quick_ask_features(menu_bar_available=True, shortcut_applier=lambda shortcut: "")
    preferences = window.open_preferences()
    _settle(400)
    path = out_dir / "settings.png"
    preferences.grab().save(str(path))
    written.append(path)
    preferences.close()

    engine.release.set()
    window.chat.stop()
    _wait(lambda: not window.chat.generating)
    window.close()
    worker.shutdown()

    written += capture_documents(out_dir, store, settings)
    written += capture_reasoning(out_dir, store, settings)
    written += capture_markdown(out_dir, store, settings, theme)
    store.close()

    from quick_ask_screenshot import capture_quick_ask  # beside this script (sys.path[0])

    for name in ("light", "dark"):
        written.append(capture_quick_ask(out_dir, name))
    theme.set_theme("light")
    return written


VERSION_QUESTION = "Suggest a name for a bakery that only sells sourdough."
VERSION_ANSWERS = (
    "**The Patient Loaf.** Sourdough takes its time, and the name tells customers it is worth the wait.",
    "A few ideas, each with a different feel:\n\n- **Wild Rise**: after the wild yeast in the starter\n"
    "- **Crumb & Crust**: plain and warm\n- **The Long Ferment**: for people who know their bread\n\n"
    "*Wild Rise* is the easiest to remember and works well on a sign.",
)


def capture_chat_history(out_dir: Path) -> list[Path]:
    """Chat Settings and answer versions, light and dark, at full size and at 800x500."""
    from PySide6.QtCore import QPoint
    from PySide6.QtGui import QColor, QPainter
    from PySide6.QtWidgets import QApplication

    from app.chat.chat_settings import ChatSettings
    from app.chat.store import ConversationStore
    from app.gui import configure_application_identity
    from app.settings import Settings
    from app.window.main_window import MainWindow
    from app.window.theme import ThemeManager
    from app.worker.worker import WorkerClient

    configure_application_identity()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    theme = ThemeManager(app, "light")
    data = Path(os.environ["QWEN_DESK_DATA_DIR"]) / "history"
    store = ConversationStore(data / "conversations.sqlite3")
    now = time.time()
    for index, (question, answer) in enumerate(HISTORY):
        conversation = store.create_conversation(question)
        store.add_message(conversation.id, "user", question)
        store.add_message(conversation.id, "assistant", answer)
        store._db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now - 3600 * (index + 1), conversation.id))
        if index == 2:
            store.set_pinned(conversation.id, True)
    model = "mlx-community/Qwen3-8B-4bit"
    chat = store.create_conversation("Bakery names", model=model)
    store.add_message(chat.id, "user", VERSION_QUESTION)
    first = store.add_message(chat.id, "assistant", VERSION_ANSWERS[0], model="mlx-community/Qwen3-4B-4bit",
                              stats={"generation_tps": 61.2, "generation_tokens": 31, "ttft_s": 0.22})
    store.add_message(chat.id, "assistant", VERSION_ANSWERS[1], model=model, version_of=first.id,
                      stats={"generation_tps": 38.6, "generation_tokens": 74, "ttft_s": 0.41})
    store.set_conversation_settings(chat.id, ChatSettings(
        system_prompt="You are a branding consultant. Keep names short and easy to say.",
        temperature=0.9, max_tokens=1024).to_json())
    settings = Settings()
    settings.model = model
    settings.thinking_enabled = False
    worker = WorkerClient(engine_loader=lambda path, progress: DemoEngine())
    window = MainWindow(store, worker, settings, theme_manager=theme)
    theme.changed.connect(window.apply_theme)
    written: list[Path] = []
    try:
        window.show()
        worker.load_model(model)
        _wait(lambda: worker.model_info is not None)
        window.sidebar.refresh()
        window.chat.open_conversation(chat.id)
        for size, suffix in (((1180, 860), ""), ((800, 500), "-small")):
            window.resize(*size)
            for name in ("light", "dark"):
                theme.set_theme(name)
                _settle(500)
                window.transcript.scroll_to_bottom()
                _settle(200)
                written.append(out_dir / f"answer-versions-{name}{suffix}.png")
                window.grab().save(str(written[-1]))
                dialog = window.open_chat_settings()
                dialog.set_advanced_shown(True)
                _settle(400)
                # A sheet drops from the window's top edge: paint it there over the window.
                picture = window.grab()
                sheet = dialog.grab()
                top = window.menuBar().height() if window.menuBar().isVisible() else 0
                at = QPoint(max(0, (picture.width() - sheet.width()) // 2), top)
                painter = QPainter(picture)
                for spread in range(12, 0, -1):  # a soft shadow, then the sheet and its edge
                    painter.fillRect(sheet.rect().translated(at).adjusted(-spread, 0, spread, spread),
                                     QColor(0, 0, 0, 5))
                painter.drawPixmap(at, sheet)
                painter.setPen(window.palette().mid().color())
                painter.drawRect(sheet.rect().translated(at).adjusted(0, 0, -1, -1))
                painter.end()
                written.append(out_dir / f"chat-settings-{name}{suffix}.png")
                picture.save(str(written[-1]))
                dialog.reject()
    finally:
        window.close()
        worker.shutdown()
        store.close()
    theme.set_theme("light")
    return written


def _shown_answer(window) -> int:
    views = [v for v in window.transcript.views if v.role == "assistant"]
    return len(views[-1].answer_text) if views else 0


def capture_ux(out_dir: Path) -> list[Path]:
    """Issue 14's views, at 800x500 and full size, light and dark."""
    from PySide6.QtWidgets import QApplication

    from app.chat.store import ConversationStore
    from app.documents.controller import DocumentController
    from app.documents.drop_highlight import DropHighlight
    from app.gui import configure_application_identity
    from app.settings import Settings
    from app.window.main_window import MainWindow
    from app.window.theme import ThemeManager
    from app.worker.worker import WorkerClient
    from mlx_backend.documents.summary import SummaryOptions

    configure_application_identity()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    theme = ThemeManager(app, "light")
    data = Path(os.environ["QWEN_DESK_DATA_DIR"])
    (data / "ux").mkdir(exist_ok=True)
    store = ConversationStore(data / "ux" / "conversations.sqlite3")
    conversation = store.create_conversation(HISTORY[0][0])
    store.add_message(conversation.id, "user", HISTORY[0][0])
    store.add_message(conversation.id, "assistant", HISTORY[0][1])
    settings = Settings()
    written: list[Path] = []

    def shot(widget, name: str) -> None:
        _settle(300)
        written.append(out_dir / f"{name}.png")
        widget.grab().save(str(written[-1]))

    # No model yet: Send is off and says why.
    idle = WorkerClient(engine_loader=lambda path, progress: None)
    window = MainWindow(store, idle, settings)
    theme.changed.connect(window.apply_theme)
    window.resize(800, 500)
    window.show()
    window.composer.set_text("Hello")
    for name in ("light", "dark"):
        theme.set_theme(name)
        shot(window, f"ux-no-model-{name}")
    window.close()
    idle.shutdown()

    engine = DocumentDemoEngine()
    worker = WorkerClient(engine_loader=lambda path, progress: engine)
    window = MainWindow(store, worker, settings)
    theme.changed.connect(window.apply_theme)
    documents = DocumentController(window.chat, window.composer, worker, drop_targets=(window.transcript,),
                                   place_panel=window.add_bottom_panel, system_prompt=lambda: "",
                                   options=SummaryOptions(budget_bytes=DEMO_BUDGET_BYTES), clock=engine.clock,
                                   parent=window)
    highlight = DropHighlight(window.transcript.parentWidget(), documents.drop_filter)
    window.show()
    worker.load_model("mlx-community/Qwen3-8B-4bit")
    _wait(lambda: worker.model_info is not None)
    window.chat.open_conversation(conversation.id)
    try:
        for size, label in (((1180, 860), "full"), ((800, 500), "800x500")):
            window.resize(*size)
            for name in ("light", "dark"):
                theme.set_theme(name)
                highlight.set_active(True)
                shot(window, f"ux-drop-{label}-{name}")
                highlight.set_active(False)
        theme.set_theme("light")
        window.new_chat()
        with tempfile.TemporaryDirectory(prefix="qwen-desk-doc-") as folder:
            documents.open_files([str(write_demo_pdf(Path(folder)))])
            _wait(lambda: documents.plan_panel.plan is not None, timeout_s=60)
            for size, label in (((800, 500), "800x500"), ((1180, 860), "full")):
                window.resize(*size)
                for name in ("light", "dark"):
                    theme.set_theme(name)
                    shot(window, f"ux-plan-{label}-{name}")
        documents.dismiss()
        theme.set_theme("light")
        window.resize(800, 500)
        menu = window.menus.quick_ask_action.associatedObjects()
        window_menu = next(m for m in menu if hasattr(m, "popup") and m is not window)
        window_menu.popup(window.mapToGlobal(window.rect().center()))
        shot(window_menu, "ux-window-menu")
        window_menu.hide()
    finally:
        window.close()
        worker.shutdown()
        store.close()
    from quick_ask_screenshot import capture_quick_ask  # beside this script (sys.path[0])

    for name in ("light", "dark"):
        written.append(capture_quick_ask(out_dir, name))  # the fixed-height popup
    theme.set_theme("light")
    return written


def capture_tools_views(out_dir: Path) -> list[Path]:
    """The tool approval dialog, a finished tool block, the Tools settings section."""
    from PySide6.QtWidgets import QApplication

    from app.chat.store import ConversationStore
    from app.gui import configure_application_identity
    from app.settings import Settings
    from app.window.theme import ThemeManager
    from tools_screenshot import capture_tools  # beside this script

    configure_application_identity()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    theme = ThemeManager(app, "light")
    store = ConversationStore(Path(os.environ["QWEN_DESK_DATA_DIR"]) / "tools" / "conversations.sqlite3")
    try:
        return capture_tools(out_dir, store, Settings(), theme)
    finally:
        store.close()


def capture_models(out_dir: Path) -> list[Path]:
    """The Models window and the top bar's model picker (no model, loading, loaded with its menu
    open), at 800 x 500 and full size, light and dark. ``--only models``."""
    from PySide6.QtWidgets import QApplication

    from app.chat.store import ConversationStore
    from app.gui import configure_application_identity
    from app.models.installed import InstalledModel
    from app.models.manager import ModelManager
    from app.settings import Settings
    from app.window.main_window import MainWindow
    from app.window.theme import ThemeManager
    from app.worker.worker import WorkerClient
    from tests.support.checkpoints import write_random_checkpoint

    configure_application_identity()
    app = QApplication.instance() or QApplication(sys.argv[:1])
    theme = ThemeManager(app, "light")
    data = Path(os.environ["QWEN_DESK_DATA_DIR"])
    store = ConversationStore(data / "conversations.sqlite3")
    settings = Settings()
    folder = write_random_checkpoint(data / "models" / "Qwen3-tiny-finetune")
    hold = threading.Event()

    def loader(path, progress):
        hold.wait(30)
        return SimpleNamespace(info=DemoInfo(), stream=lambda request, cancel: iter(()))

    def cached() -> list[InstalledModel]:
        hf = Path.home() / ".cache/huggingface/hub"
        return [InstalledModel("mlx-community/Qwen3-8B-4bit", "Qwen3-8B-4bit", hf, 4_610_000_000, "cache")]

    worker = WorkerClient(engine_loader=loader)
    window = MainWindow(store, worker, settings, theme_manager=theme, model_manager_factory=lambda parent: ModelManager(
        settings, parent, budget_bytes=DEMO_BUDGET_BYTES, installed_models=cached))
    theme.changed.connect(window.apply_theme)
    window.model_picker._scan = cached
    window.show()
    written: list[Path] = []

    def save(widget, name: str) -> None:
        written.append(out_dir / f"{name}.png")
        widget.grab().save(str(written[-1]))

    try:
        for theme_name in ("light", "dark"):
            theme.set_theme(theme_name)
            window.resize(800, 500)
            window.model_picker.refresh()
            _settle(400)
            save(window, f"picker-none-{theme_name}-800x500")
        theme.set_theme("light")
        hold.clear()
        window.load_model("mlx-community/Qwen3-8B-4bit")
        _wait(lambda: window.model_picker.currentText().startswith("Loading"))
        _settle(300)
        save(window, "picker-loading-light-800x500")
        hold.set()
        _wait(lambda: window.model_ready)
        for theme_name in ("light", "dark"):
            theme.set_theme(theme_name)
            window.resize(1180, 760)
            _settle(400)
            window.model_picker.showPopup()
            _settle(400)
            save(window.model_picker.view().window(), f"picker-menu-{theme_name}")
            window.model_picker.hidePopup()
        for theme_name in ("light", "dark"):
            theme.set_theme(theme_name)
            manager = window.open_model_manager(first_run=True)
            for size, label in (((780, 470), "800x500"), ((760, 620), "full")):
                manager.resize(*size)
                _settle(300)
                manager.show_recommended()
                _settle(200)
                save(manager, f"models-{theme_name}-{label}")
            manager.add_folder(str(folder))
            _wait(lambda: window.model_ready and window.worker.model_name == str(folder))
            _settle(300)
            save(manager, f"models-added-{theme_name}-full")
            manager.delete(next(m for m in manager.installed() if m.key == str(folder)))
            manager.hide()
        # No model at all: the empty "On this Mac" line, in both themes.
        empty = ModelManager(Settings(), budget_bytes=DEMO_BUDGET_BYTES, installed_models=lambda: [])
        for theme_name in ("light", "dark"):
            theme.set_theme(theme_name)
            empty.resize(760, 620)
            empty.show()
            _settle(400)
            save(empty, f"models-empty-{theme_name}")
        empty.close()
    finally:
        hold.set()
        window.close()
        worker.shutdown()
        store.close()
        theme.set_theme("light")
    return written


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "screenshots")
    parser.add_argument("--only", choices=("markdown", "chat-history", "ux", "tools", "models"), default="", help="take only these views")
    args = parser.parse_args()
    if not os.environ.get("DISPLAY") and os.environ.get("QT_QPA_PLATFORM") not in ("xcb",) and shutil.which("xvfb-run"):
        command = ["xvfb-run", "-a", "-s", "-screen 0 1400x900x24", sys.executable, __file__, "--out", str(args.out)]
        command += ["--only", args.only] if args.only else []
        return subprocess.call(command)
    os.environ["QT_QPA_PLATFORM"] = "xcb" if os.environ.get("DISPLAY") else "offscreen"
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="qwen-desk-shots-") as data:
        os.environ["QWEN_DESK_DATA_DIR"] = data
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        if args.only == "chat-history":
            paths = capture_chat_history(args.out)
        elif args.only == "ux":
            paths = capture_ux(args.out)
        elif args.only == "tools":
            paths = capture_tools_views(args.out)
        elif args.only == "models":
            paths = capture_models(args.out)
        elif args.only:
            paths = capture(args.out, args.only)
        else:
            paths = capture(args.out) + capture_chat_history(args.out) + capture_ux(args.out) + capture_tools_views(args.out)
            paths += capture_models(args.out)
        for path in paths:
            print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
