"""The app path at engine speed: tokens per second that reach the transcript vs the engine alone.

Two sides answer the same greedy request from the same checkpoint, alternating (ABBA):

- the engine alone: ``Engine.stream`` consumed in a plain loop;
- the app: the real window offscreen (``MainWindow``), the real ``WorkerClient`` (its worker
  thread, event batching, cross-thread signals, the controller, the message view and its
  rendering), the same request sent through the composer.

Both count the tokens after the first over the time from the first answer token to the last:
for the engine, first ``AnswerDelta`` to ``Finished``; for the app, the first answer text that
reaches the message view to the end of its final rendering (``MessageView.finish``).

``render_costs`` times one streaming update of the message view at several answer lengths,
next to what re-rendering the whole answer costs (the view before streaming chunks).

    python bench/app_path.py [--tokens N] [--runs N]

Its checkpoint (``fast_checkpoint``) is a small random model, so the engine runs as fast as it
can here: the app's share of each token is then at its largest, the case this row is about.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Optional

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")

from mlx_backend import AnswerDelta, ChatMessage, ChatRequest, Engine, Finished, SamplingParams  # noqa: E402

GREEDY = SamplingParams(temperature=0.0, top_p=1.0, top_k=0)
RENDER_LENGTHS = (100, 2000, 10000)  # answer lengths in tokens for render_costs
CHARS_PER_TOKEN = 4  # English Markdown, about


@dataclass
class AppPathResult:
    engine_tps: list[float] = field(default_factory=list)
    app_tps: list[float] = field(default_factory=list)
    tokens: int = 0

    @property
    def ratio(self) -> float:
        return statistics.median(self.app_tps) / statistics.median(self.engine_tps)


@dataclass(frozen=True)
class RenderCost:
    tokens: int
    streaming_ms: float  # one update of the streaming view at this length (median)
    full_ms: float  # re-rendering the whole answer once at this length
    streaming_chars: int  # Markdown characters the streaming update rendered


def qt_app():
    from PySide6.QtWidgets import QApplication

    return QApplication.instance() or QApplication(["qwen-desk-bench"])


def question(max_tokens: int) -> ChatRequest:
    return ChatRequest(
        messages=(ChatMessage("user", "Write a long story about a lighthouse keeper."),),
        enable_thinking=False,
        sampling=GREEDY,
        max_tokens=max_tokens,
    )


def engine_alone(engine: Engine, request: ChatRequest) -> tuple[float, int]:
    first = end = None
    tokens = 0
    for event in engine.stream(request):
        if isinstance(event, AnswerDelta) and first is None:
            first = time.perf_counter()
        elif isinstance(event, Finished):
            end = time.perf_counter()
            tokens = event.stats.generation_tokens
    assert first is not None and end is not None and tokens > 1, "the engine produced no answer"
    return (tokens - 1) / (end - first), tokens


def wait_until(app, done: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not done():
        if time.monotonic() > deadline:
            raise TimeoutError("the app did not finish in time")
        app.processEvents()
        time.sleep(0.001)


class AppSide:
    """The real window and worker, answering ``request`` through the composer."""

    def __init__(self, folder: Path, request: ChatRequest, data_dir: Path) -> None:
        os.environ["QWEN_DESK_DATA_DIR"] = str(data_dir)  # never the user's conversations
        from app.chat.message_view import MessageView
        from app.chat.store import DATABASE_NAME, ConversationStore
        from app.chat.turns import TurnJob
        from app.settings import Settings
        from app.window.main_window import MainWindow
        from app.worker.worker import WorkerClient

        self.app = qt_app()
        self.client = WorkerClient()
        loaded = []
        self.client.modelLoaded.connect(lambda *_: loaded.append(True))
        self.client.load_model(str(folder))
        wait_until(self.app, lambda: bool(loaded), 600)
        self.window = MainWindow(ConversationStore(data_dir / DATABASE_NAME), self.client, Settings())
        self.window.resize(900, 700)
        self.window.show()
        # The same prompt as the engine alone (no history, no system prompt, no conversation cache).
        self.window.chat.set_job_builder(
            lambda context: TurnJob(lambda engine, cancel: engine.stream(request, cancel))
        )
        self._marks: list[float] = []
        original_append, original_finish = MessageView.append_answer, MessageView.finish
        marks = self._marks

        def append_answer(view, text):
            original_append(view, text)
            if not marks:
                marks.append(time.perf_counter())

        def finish(view, *args, **kwargs):
            original_finish(view, *args, **kwargs)
            if marks:
                marks.append(time.perf_counter())

        MessageView.append_answer, MessageView.finish = append_answer, finish

    def run(self) -> tuple[float, int]:
        self._marks.clear()
        self.window.chat.new_conversation()
        self.window.composer.set_text("Write a long story about a lighthouse keeper.")
        self.window.composer.submit()
        wait_until(self.app, lambda: len(self._marks) == 2 and not self.window.chat.generating, 600)
        answer = self.window.store.messages(self.window.chat.conversation_id)[-1]
        tokens = (answer.stats or {}).get("generation_tokens", 0)
        assert answer.status == "complete" and tokens > 1, f"the app's answer ended {answer.status}"
        first, end = self._marks
        return (tokens - 1) / (end - first), tokens

    def close(self) -> None:
        self.window.close()
        self.client.shutdown(10000)


def measure(folder: Path, engine: Engine, tokens: int, runs: int, log: Callable[[str], None] = print) -> AppPathResult:
    """ABBA runs of the engine alone and the app, after one warm-up each."""
    request = question(tokens)
    result = AppPathResult()
    with tempfile.TemporaryDirectory(prefix="qwen-desk-app-path-") as data:
        side = AppSide(folder, request, Path(data))
        try:
            engine_alone(engine, request)
            side.run()
            for i in range(runs):
                order = (0, 1) if i % 2 == 0 else (1, 0)
                for which in order:
                    if which == 0:
                        tps, result.tokens = engine_alone(engine, request)
                        result.engine_tps.append(tps)
                    else:
                        tps, _ = side.run()
                        result.app_tps.append(tps)
                log(f"app path run {i + 1}: engine {result.engine_tps[-1]:.1f}, app {result.app_tps[-1]:.1f} tokens/s")
        finally:
            side.close()
    return result


def sample_markdown(chars: int) -> str:
    """Answer-like Markdown of about ``chars`` characters: headings, prose, lists, tables, code."""
    prose = (
        "The committee reviewed the quarterly figures for every regional office and noted that "
        "shipping delays and a late harvest explained most of the variance. "
    )
    parts, size, i = [], 0, 0
    while size < chars:
        part = (
            f"## Part {i}\n\n{prose * 2}\n\n1. first point\n2. second with `code`\n3. third **point**\n\n"
            f"| a | b |\n|---|---|\n| 1 | 2 |\n\n```python\ndef f_{i}(x):\n    return x * {i}\n```\n\n"
        )
        parts.append(part)
        size += len(part)
        i += 1
    return "".join(parts)[:chars]


def render_costs(lengths: tuple[int, ...] = RENDER_LENGTHS, repeats: int = 5) -> list[RenderCost]:
    """One streaming update of the message view at each answer length, vs one whole render."""
    from app.chat.message_view import MessageView
    from app.chat.rendering import RenderColors
    from app.chat.store import StoredMessage

    app = qt_app()
    colors = RenderColors.from_palette(app.palette())
    costs = []
    for tokens in lengths:
        text = sample_markdown(tokens * CHARS_PER_TOKEN)
        view = MessageView(StoredMessage(1, "c", "assistant", "", status="streaming"), colors)
        view.resize(780, 600)
        view.begin_streaming()
        view.append_answer(text)
        view._render_now()  # seals every finished chunk at once, as a reopened answer would
        times, chars = [], 0
        for i in range(repeats):
            view.append_answer(" word")
            started = time.perf_counter()
            view._render_now()
            times.append((time.perf_counter() - started) * 1000)
            chars = view._stream_view.rendered_chars[-1]
        full = []
        for _ in range(max(1, repeats // 2)):
            started = time.perf_counter()
            view.body.set_markdown(view.answer_text, colors)
            full.append((time.perf_counter() - started) * 1000)
        view.finish("complete")
        view.deleteLater()
        costs.append(RenderCost(tokens, statistics.median(times), statistics.median(full), chars))
    return costs


def render_cost_rows(costs: list[RenderCost]) -> list[tuple[str, str, str, str, str]]:
    return [
        (
            f"  one streaming update at {cost.tokens:,} answer tokens ({cost.streaming_chars:,} chars rendered)",
            f"{cost.streaming_ms:.1f} ms", f"{cost.full_ms:.1f} ms (whole answer)",
            f"{cost.streaming_ms / cost.full_ms:.3f}", "flat in length",
        )
        for cost in costs
    ]


def fast_checkpoint(root: Path) -> Path:
    """A small random Qwen3 with the real tokenizer (when the fixtures have it): a fast engine."""
    from tests.support.checkpoints import write_random_checkpoint
    from tests.support.tokenizers import qwen3_fixtures_available

    tokenizer = "qwen3" if qwen3_fixtures_available() else "tiny"
    return write_random_checkpoint(root / "fast", tokenizer=tokenizer, embedding_std=0.02)


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/app_path.py", description=__doc__.split("\n")[0])
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    qt_app()
    with tempfile.TemporaryDirectory(prefix="qwen-desk-bench-") as tmp:
        folder = fast_checkpoint(Path(tmp))
        engine = Engine.load(folder)
        result = measure(folder, engine, args.tokens, args.runs)
    print(f"engine alone {statistics.median(result.engine_tps):.1f} tokens/s, app "
          f"{statistics.median(result.app_tps):.1f} tokens/s, ratio {result.ratio:.3f} ({result.tokens} tokens)")
    for cost in render_costs():
        print(f"{cost.tokens:>6} tokens: streaming update {cost.streaming_ms:.1f} ms "
              f"({cost.streaming_chars} chars), whole render {cost.full_ms:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
