"""Screenshots of the Quick Ask popup, light and dark, for the README and for review.

    xvfb-run -a -s "-screen 0 1280x800x24" .venv/bin/python packaging/quick_ask_screenshot.py

writes screenshots/quick-ask-light.png and screenshots/quick-ask-dark.png. The answer comes
from a scripted stand-in engine (a random-weight test model writes gibberish), streamed
through the real WorkerClient and popup. packaging/screenshots.py can call
``capture_quick_ask(out_dir, theme)`` with its own QApplication.
"""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DEMO_QUESTION = "How do I reverse a list in Python?"
DEMO_ANSWER = """Use **slicing** for a reversed copy, or `list.reverse()` to reverse in place:

```python
numbers = [1, 2, 3]
backwards = numbers[::-1]   # a reversed copy
numbers.reverse()           # in place
```

`reversed(numbers)` gives an iterator, handy in a `for` loop.
"""


class _DemoEngine:
    """Streams DEMO_ANSWER word by word, like a model would."""

    def stream(self, request, cancel: threading.Event) -> Iterator[object]:
        from mlx_backend import AnswerDelta, Finished, GenerationStats

        words = DEMO_ANSWER.split(" ")
        for index, word in enumerate(words):
            if cancel.is_set():
                break
            time.sleep(0.002)
            yield AnswerDelta(word if index == len(words) - 1 else word + " ")
        stats = GenerationStats(
            prompt_tokens=18, cached_tokens=0, generation_tokens=71, ttft_s=0.08,
            prompt_tps=900.0, generation_tps=104.0, peak_memory_gb=0.5,
        )
        yield Finished("stop", stats)


def capture_quick_ask(out_dir: Path, theme: str = "light") -> Path:
    """Render the popup with a finished demo answer; needs a running QApplication."""
    from PySide6.QtCore import QPoint, QRect
    from PySide6.QtGui import QColor, QLinearGradient, QPainter, QPixmap
    from PySide6.QtWidgets import QApplication

    from app.quick_ask.popup import QuickAskPopup
    from app.window.theme import ThemeManager
    from app.worker.worker import WorkerClient

    app = QApplication.instance()
    ThemeManager(app, theme)  # type: ignore[arg-type]
    client = WorkerClient(engine_loader=lambda path, progress: _DemoEngine())
    popup = QuickAskPopup(client)
    try:
        _wait_for(client.modelLoaded, lambda: client.load_model("demo"))
        popup.popup_at(QRect())
        job = popup.ask(DEMO_QUESTION)  # its events are queued: waiting from here misses none
        _wait_for(job.finished, lambda: None)
        QApplication.processEvents()
        shot = popup.grab()
        # The popup has transparent rounded corners: show it on a desktop-like backdrop.
        margin = 28
        canvas = QPixmap(shot.width() + 2 * margin, shot.height() + 2 * margin)
        painter = QPainter(canvas)
        backdrop = QLinearGradient(0, 0, canvas.width(), canvas.height())
        backdrop.setColorAt(0, QColor("#8fa6d8" if theme == "light" else "#27304a"))
        backdrop.setColorAt(1, QColor("#c9b6e4" if theme == "light" else "#3a2a4f"))
        painter.fillRect(canvas.rect(), backdrop)
        painter.drawPixmap(QPoint(margin, margin), shot)
        painter.end()
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / f"quick-ask-{theme}.png"
        if not canvas.save(str(target)):
            raise SystemExit(f"could not write {target}")
        return target
    finally:
        popup.close()
        popup.deleteLater()
        client.shutdown()


def _wait_for(signal, start, timeout_ms: int = 20_000) -> None:
    from PySide6.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    signal.connect(loop.quit)
    QTimer.singleShot(timeout_ms, loop.quit)
    start()
    loop.exec()
    signal.disconnect(loop.quit)


def main() -> int:
    from PySide6.QtWidgets import QApplication

    app = QApplication.instance() or QApplication(sys.argv[:1])  # noqa: F841
    out_dir = ROOT / "screenshots"
    for theme in ("light", "dark"):
        print(capture_quick_ask(out_dir, theme))
    return 0


if __name__ == "__main__":
    sys.exit(main())
