"""The status bar: which model, how fast, how much context and memory the answer uses.

While an answer streams the figures are live estimates (``show_stats`` with the chat
controller's ``liveStatsChanged``); the engine's exact stats replace them when it ends.
"""

from __future__ import annotations

from typing import Any, Optional

from PySide6.QtWidgets import QLabel, QProgressBar, QStatusBar, QWidget

GB = 1e9

THINKING_MODE_WORDS = {
    "hybrid": "hybrid thinking",  # thinks or not, as the Thinking switch says
    "always": "always thinks",  # Qwen3 Thinking-2507
    "never": "no thinking",  # Qwen3 Instruct-2507
}


class StatusPanel(QStatusBar):
    def __init__(self, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setSizeGripEnabled(False)
        self.model_label = QLabel("No model", self)
        self.load_bar = QProgressBar(self)
        self.load_bar.setObjectName("PrefillBar")
        self.load_bar.setTextVisible(False)
        self.load_bar.setFixedSize(120, 4)
        self.load_bar.hide()
        self.speed_label = QLabel("", self)
        self.ttft_label = QLabel("", self)
        self.context_label = QLabel("", self)
        self.memory_label = QLabel("", self)
        for label, tip in (
            (self.speed_label, "Generation speed of the answer (live while it streams)"),
            (self.ttft_label, "Time to first token of the answer"),
            (self.context_label, "Tokens the conversation uses / the model's context window"),
            (self.memory_label, "Model weights and peak memory of the last answer"),
        ):
            label.setToolTip(tip)
        # The local server: where it listens, and whether it is answering a request right now.
        self.server_label = QLabel("", self)
        self.server_label.setObjectName("ServerLabel")
        self.server_label.hide()
        self.addWidget(self.model_label)
        self.addWidget(self.load_bar)
        self.addWidget(self.server_label)
        for label in (self.speed_label, self.ttft_label, self.context_label, self.memory_label):
            self.addPermanentWidget(label)
        self._info: Any = None

    def show_loading(self, name: str) -> None:
        self._info = None
        self.model_label.setText(f"Loading {display_name(name)}\u2026")
        self.load_bar.setRange(0, 0)
        self.load_bar.show()
        self.memory_label.setText("")
        self.context_label.setText("")

    def show_load_progress(self, fraction: Optional[float]) -> None:
        if fraction is None:
            self.load_bar.setRange(0, 0)
        else:
            self.load_bar.setRange(0, 1000)
            self.load_bar.setValue(int(fraction * 1000))

    def show_model(self, info: Any, name: str = "") -> None:
        self._info = info
        self.load_bar.hide()
        if info is None:
            self.model_label.setText("No model")
            return
        bits = getattr(info, "quantization_bits", None)
        parts = [display_name(name or getattr(info, "name", ""))]
        if bits:
            parts.append(f"{bits}-bit")
        parts.append(THINKING_MODE_WORDS.get(getattr(info, "thinking_mode", ""), ""))
        self.model_label.setText("  \u00b7  ".join(p for p in parts if p))
        self.model_label.setToolTip(name or getattr(info, "name", ""))
        weights = getattr(info, "weights_bytes", 0) or 0
        self.memory_label.setText(f"Weights {weights / GB:.1f} GB" if weights else "")
        self.show_context(None)

    def show_context(self, used: Optional[int]) -> None:
        """``used`` tokens of the model's window (None: not known, e.g. a new chat)."""
        context = getattr(self._info, "context_length", 0) if self._info is not None else 0
        if used:
            self.context_label.setText(f"Context {used:,} / {context:,}" if context else f"Context {used:,}")
        else:
            self.context_label.setText(f"{context:,}-token context" if context else "")

    def show_load_failed(self, message: str) -> None:
        self._info = None
        self.load_bar.hide()
        self.model_label.setText("No model loaded")
        self.model_label.setToolTip(message)

    def show_stats(self, stats: dict[str, Any]) -> None:
        """The answer's figures: final ones, or live ones while it streams (no peak memory yet)."""
        tps = stats.get("generation_tps") or 0.0
        self.speed_label.setText(f"{tps:.1f} tok/s" if tps else "")
        ttft = stats.get("ttft_s") or 0.0
        self.ttft_label.setText(f"TTFT {ttft:.2f} s" if ttft else "")
        if "prompt_tokens" in stats:
            self.show_context(int(stats["prompt_tokens"]) + int(stats.get("generation_tokens", 0)))
        weights = (getattr(self._info, "weights_bytes", 0) or 0) if self._info is not None else 0
        peak = stats.get("peak_memory_gb") or 0.0
        pieces = []
        if weights:
            pieces.append(f"Weights {weights / GB:.1f} GB")
        if peak:
            pieces.append(f"peak {peak:.1f} GB")
        self.memory_label.setText(", ".join(pieces))

    def show_server(self, state: Any, answering: bool = False) -> None:
        """``state``: the local server's ``ServerState``; ``answering``: a request runs now."""
        kind = getattr(state, "kind", "stopped")
        if kind == "failed":
            text, tip = "Local server off: could not start", state.message
        elif kind == "stopped":
            text, tip = "", ""
        elif answering:
            text, tip = "Local server: answering a request", f"Listening on {state.url}"
        elif kind == "starting":
            text, tip = "Local server starting\u2026", ""
        else:
            text = f"Local server on {state.url}"
            tip = f"Other devices: {state.network_url}" if state.network_url else "Only apps on this computer can reach it"
        self.server_label.setText(text)
        self.server_label.setToolTip(tip)
        self.server_label.setVisible(bool(text))

    def clear_stats(self) -> None:
        for label in (self.speed_label, self.ttft_label):
            label.setText("")


def display_name(path_or_repo: str) -> str:
    """"mlx-community/Qwen3-8B-4bit" -> "Qwen3-8B-4bit"; a folder -> its name."""
    text = path_or_repo.rstrip("/\\")
    for separator in ("/", "\\"):
        if separator in text:
            text = text.rsplit(separator, 1)[1]
    return text
