"""Asking the user before a tool runs: the worker thread blocks on a request that a dialog on
the GUI thread answers (Allow Once / Always Allow / Deny; Esc denies).

The worker never waits forever: it polls its cancel event, so Stop, closing the window or
quitting answers "deny" at once. Per-tool choices ("always" / "never") come from Settings and
are checked on the worker thread against a snapshot the GUI thread keeps current.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Optional

from PySide6.QtCore import QObject, Qt, Signal, Slot
from PySide6.QtGui import QFont
from PySide6.QtWidgets import QDialog, QHBoxLayout, QLabel, QPlainTextEdit, QPushButton, QVBoxLayout, QWidget

from app.settings import Settings
from mlx_backend.events import ToolCall

POLL_S = 0.05
ALLOW_ONCE, ALWAYS, DENY = "once", "always", "deny"


@dataclass
class ApprovalRequest:
    call: ToolCall
    server: str
    tool: str
    answer: Optional[str] = None
    done: threading.Event = field(default_factory=threading.Event)


class ApprovalDialog(QDialog):
    """The tool, its server and the exact arguments; the caller reads ``decision``."""

    def __init__(self, request: ApprovalRequest, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setObjectName("ToolApprovalDialog")
        self.setWindowTitle("Allow a tool call?")
        self.setWindowModality(Qt.WindowModality.WindowModal)  # a sheet on macOS
        self.decision = DENY
        layout = QVBoxLayout(self)
        title = QLabel(f"<b>Qwen wants to run \u201c{_escape(request.tool)}\u201d</b>", self)
        layout.addWidget(title)
        where = QLabel(f"from the MCP server \u201c{_escape(request.server)}\u201d, with these arguments:", self)
        where.setWordWrap(True)
        layout.addWidget(where)
        self.arguments = QPlainTextEdit(self)
        self.arguments.setObjectName("ToolArguments")
        self.arguments.setReadOnly(True)
        self.arguments.setPlainText(json.dumps(request.call.arguments, indent=2, ensure_ascii=False, sort_keys=True))
        self.arguments.setFont(QFont("Menlo", 11))
        self.arguments.setMinimumSize(380, 120)
        layout.addWidget(self.arguments, 1)
        buttons = QHBoxLayout()
        self.deny_button = QPushButton("Deny", self)
        self.always_button = QPushButton(f"Always Allow \u201c{request.tool}\u201d", self)
        self.once_button = QPushButton("Allow Once", self)
        self.once_button.setDefault(True)
        buttons.addWidget(self.deny_button)
        buttons.addStretch(1)
        buttons.addWidget(self.always_button)
        buttons.addWidget(self.once_button)
        layout.addLayout(buttons)
        self.deny_button.clicked.connect(lambda: self._choose(DENY))
        self.always_button.clicked.connect(lambda: self._choose(ALWAYS))
        self.once_button.clicked.connect(lambda: self._choose(ALLOW_ONCE))

    def _choose(self, decision: str) -> None:
        self.decision = decision
        self.accept() if decision != DENY else self.reject()

    def reject(self) -> None:  # Esc and the close button deny
        if self.decision not in (ALLOW_ONCE, ALWAYS):
            self.decision = DENY
        super().reject()


class ApprovalBroker(QObject):
    """Lives on the GUI thread. ``approve`` is called on the worker thread."""

    _requested = Signal(object)
    # (ApprovalRequest, ApprovalDialog) once the dialog is on screen (the transcript marks the call).
    dialogShown = Signal(object, object)
    dialogClosed = Signal(object)

    def __init__(self, settings: Settings, parent_window: Optional[QWidget] = None) -> None:
        super().__init__()
        self._settings = settings
        self._window = parent_window
        self._permissions = dict(settings.tool_permissions)
        self.dialog: Optional[ApprovalDialog] = None
        self._requested.connect(self._show, Qt.ConnectionType.QueuedConnection)

    def set_window(self, window: Optional[QWidget]) -> None:
        self._window = window

    def refresh_permissions(self) -> None:
        self._permissions = dict(self._settings.tool_permissions)

    def approve(self, call: ToolCall, server: str, tool: str, cancel: threading.Event) -> bool:
        permission = self._permissions.get(f"{server}/{tool}", "ask")
        if permission in ("always", "never"):
            return permission == "always"
        request = ApprovalRequest(call, server, tool)
        self._requested.emit(request)
        while not request.done.wait(POLL_S):
            if cancel.is_set():
                request.done.set()  # a dialog not shown yet never opens for a stopped turn
                return False
        return request.answer in (ALLOW_ONCE, ALWAYS)

    @Slot(object)
    def _show(self, request: ApprovalRequest) -> None:
        if request.done.is_set():
            return
        dialog = ApprovalDialog(request, self._window)
        self.dialog = dialog

        def finished(_code: int) -> None:
            if dialog.decision == ALWAYS:
                self._settings.set_tool_permission(request.server, request.tool, "always")
                self.refresh_permissions()
            request.answer = dialog.decision
            request.done.set()
            if self.dialog is dialog:
                self.dialog = None
            self.dialogClosed.emit(request)
            dialog.deleteLater()

        dialog.finished.connect(finished)
        dialog.open()
        self.dialogShown.emit(request, dialog)

    def dismiss(self) -> None:
        """Stop pressed: the open dialog (if any) denies and closes."""
        if self.dialog is not None:
            self.dialog.reject()


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
