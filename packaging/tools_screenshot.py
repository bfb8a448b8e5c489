"""Screenshots of tools in the app: the approval dialog, a transcript with a finished tool block
expanded, and the Tools section of Settings; light and dark, 800x500 and full size.

    python packaging/screenshots.py --only tools

A stand-in engine writes a tool call and then an answer; the call runs on the real MCP test
server (tests/support/mcp_servers) through the real worker, tool loop, approval and transcript.
"""

from __future__ import annotations

import json
import sys
import threading
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mlx_backend.events import AnswerDelta, Finished, GenerationStats, ToolCall, ToolCallEvent  # noqa: E402

STATS = GenerationStats(412, 380, 24, 0.21, 1900.0, 48.0, 4.6)
QUESTION = "What is 1234 + 4321? Use the calculator."


class ToolDemoEngine:
    from screenshots import DemoInfo  # beside this script

    info = DemoInfo()

    def stream(self, request, cancel: threading.Event) -> Iterator[object]:
        if request.messages[-1].role == "user":
            yield AnswerDelta("I'll add them with the **add** tool.")
            arguments = {"a": 1234, "b": 4321}
            yield ToolCallEvent(0, ToolCall("add", arguments, json.dumps({"name": "add", "arguments": arguments})))
        else:
            yield AnswerDelta(f"1234 + 4321 = **{request.messages[-1].content}**.")
        yield Finished("stop", STATS)


def capture_tools(out_dir: Path, store, settings, theme) -> list[Path]:
    from app.tools.attach import attach_tools
    from app.tools.block import ToolBlock
    from app.tools.service import ToolService
    from app.window.main_window import MainWindow
    from app.worker.worker import WorkerClient
    from screenshots import _settle, _wait  # beside this script
    from tests.support.mcp_servers import stdio_entry

    config = Path(store.path).parent / "mcp.json"
    config.write_text(json.dumps({"mcpServers": {"calculator": stdio_entry("--name", "calculator")}}))
    settings.tools_enabled = True
    service = ToolService(config)
    worker = WorkerClient(engine_loader=lambda path, progress: ToolDemoEngine())
    window = MainWindow(store, worker, settings, theme_manager=theme)
    theme.changed.connect(window.apply_theme)
    tools = attach_tools(window, settings, service)
    written: list[Path] = []
    try:
        window.resize(1180, 860)
        window.show()
        worker.load_model("demo")
        _wait(lambda: worker.model_info is not None)
        window.chat.new_conversation()
        window.composer.set_text(QUESTION)
        window.composer.submit()
        _wait(lambda: tools.broker.dialog is not None and tools.broker.dialog.isVisible(), 30)
        _settle(400)
        for name in ("light", "dark"):
            theme.set_theme(name)
            _settle(300)
            written.append(out_dir / f"tools-approval-{name}.png")
            tools.broker.dialog.grab().save(str(written[-1]))
        theme.set_theme("light")
        tools.broker.dialog.once_button.click()
        _wait(lambda: not window.chat.generating, 30)
        view = [v for v in window.transcript.views if v.role == "assistant"][-1]
        for block in view.tool_widgets():
            if isinstance(block, ToolBlock):
                block.set_expanded(True)
        for size, label in (((1180, 860), "full"), ((800, 500), "small")):
            window.resize(*size)
            for name in ("light", "dark"):
                theme.set_theme(name)
                _settle(500)
                window.transcript.scroll_to_bottom()
                _settle(200)
                written.append(out_dir / f"tools-transcript-{label}-{name}.png")
                window.grab().save(str(written[-1]))
        theme.set_theme("light")
        preferences = window.open_preferences()
        preferences.tools_section.list_tools()
        _wait(lambda: preferences.tools_section.list_button.isEnabled(), 30)
        for name in ("light", "dark"):
            theme.set_theme(name)
            _settle(400)
            written.append(out_dir / f"tools-settings-{name}.png")
            preferences.tools_section.grab().save(str(written[-1]))
        written.append(out_dir / "tools-settings-window.png")
        preferences.grab().save(str(written[-1]))
        preferences.close()
        theme.set_theme("light")
    finally:
        window.close()
        worker.shutdown()
        service.close()
    return written
