"""Taking "Always allow" back in Settings takes effect for the turn running now: the approval
broker is told at once (a review found it kept the copy made when the turn started)."""

from __future__ import annotations

import threading

from PySide6.QtCore import QSettings

from app.settings import Settings
from app.tools.approval import ApprovalBroker
from app.tools.service import ToolService
from app.tools.settings_section import ToolsSection
from mlx_backend.events import ToolCall


def test_a_permission_changed_in_settings_reaches_the_running_turn(qtbot, tmp_path):
    settings = Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    settings.set_tool_permission("fs", "write_file", "always")
    broker = ApprovalBroker(settings)
    section = ToolsSection(settings, ToolService(tmp_path / "mcp.json"))
    qtbot.addWidget(section)
    section.permissionsChanged.connect(broker.refresh_permissions)  # as Preferences wires it
    call = ToolCall("write_file", {"path": "/tmp/x"}, raw="")
    never_wait = threading.Event()
    assert broker.approve(call, "fs", "write_file", never_wait)

    section._set_permission("fs", "write_file", "never")
    assert settings.tool_permissions == {"fs/write_file": "never"}
    assert not broker.approve(call, "fs", "write_file", never_wait)  # denied without a dialog


def test_a_stopped_turn_never_opens_its_approval_dialog(qtbot, tmp_path):
    settings = Settings(QSettings(str(tmp_path / "settings.ini"), QSettings.Format.IniFormat))
    broker = ApprovalBroker(settings)
    shown = []
    broker.dialogShown.connect(shown.append)
    cancel = threading.Event()
    cancel.set()  # Stop came before the GUI got to the request
    assert not broker.approve(ToolCall("echo", {}, raw=""), "box", "echo", cancel)
    qtbot.wait(100)  # let the queued request reach the GUI thread
    assert shown == [] and broker.dialog is None
