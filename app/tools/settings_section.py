"""The Tools section of Settings: the master switch, the step limit, the configured MCP servers
with their state, error and log, their tools with a permission each, and the buttons to edit
mcp.json or import Claude Desktop's servers.

Listing tools starts the servers, so it runs on a helper thread (never the GUI's) and only when
the user asks; the result comes back through a queued signal."""

from __future__ import annotations

import json
import threading
from typing import Optional

from PySide6.QtCore import QUrl, Qt, Signal
from PySide6.QtGui import QDesktopServices
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDialog,
    QHBoxLayout,
    QLabel,
    QPlainTextEdit,
    QPushButton,
    QSpinBox,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from app.settings import Settings
from app.tools.service import ToolService
from mlx_backend.tools.mcp import McpConfigError, McpError, import_claude_desktop

PERMISSIONS = (("ask", "Ask first"), ("always", "Always allow"), ("never", "Never"))


class ToolsSection(QWidget):
    settingChanged = Signal(str)
    permissionsChanged = Signal()
    _listed = Signal(object)  # {server: ([McpTool], error text, stderr)} from the helper thread

    def __init__(self, settings: Settings, service: ToolService, parent: Optional[QWidget] = None) -> None:
        super().__init__(parent)
        self.setObjectName("ToolsSection")
        self._settings = settings
        self._service = service
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.enabled_check = QCheckBox("Let the model use tools from MCP servers", self)
        self.enabled_check.setChecked(settings.tools_enabled)
        self.enabled_check.toggled.connect(self._on_enabled)
        layout.addWidget(self.enabled_check)
        steps = QHBoxLayout()
        steps.addWidget(QLabel("At most", self))
        self.steps_spin = QSpinBox(self)
        self.steps_spin.setRange(1, 64)
        self.steps_spin.setValue(settings.tool_step_limit)
        self.steps_spin.valueChanged.connect(self._on_steps)
        steps.addWidget(self.steps_spin)
        steps.addWidget(QLabel("tool steps per answer", self))
        steps.addStretch(1)
        layout.addLayout(steps)
        self.tree = QTreeWidget(self)
        self.tree.setObjectName("ToolsTree")
        self.tree.setHeaderLabels(["Server / tool", "State or permission"])
        self.tree.setColumnWidth(0, 240)
        self.tree.setFixedHeight(150)  # a stable size: the listing arrives later
        layout.addWidget(self.tree)
        self.status = QLabel(self)
        self.status.setObjectName("MutedLabel")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        buttons = QHBoxLayout()
        self.list_button = QPushButton("List Tools", self)
        self.list_button.setToolTip("Start the servers and list their tools")
        self.list_button.clicked.connect(self.list_tools)
        self.edit_button = QPushButton("Open mcp.json", self)
        self.edit_button.clicked.connect(self.open_config)
        self.import_button = QPushButton("Import from Claude Desktop", self)
        self.import_button.clicked.connect(self.import_claude)
        for button in (self.list_button, self.edit_button, self.import_button):
            buttons.addWidget(button)
        buttons.addStretch(1)
        layout.addLayout(buttons)
        self._listed.connect(self._show_listing, Qt.ConnectionType.QueuedConnection)
        self._logs: dict[str, str] = {}
        self.reload()

    # ------------------------------------------------------------- settings
    def _on_enabled(self, on: bool) -> None:
        self._settings.tools_enabled = on
        self.settingChanged.emit("tools_enabled")

    def _on_steps(self, steps: int) -> None:
        self._settings.tool_step_limit = steps
        self.settingChanged.emit("tool_step_limit")

    # -------------------------------------------------------------- servers
    def reload(self) -> None:
        """The servers of mcp.json, with the state the hub knows (no server is started)."""
        self.tree.clear()
        try:
            config = self._service.config()
        except McpConfigError as error:
            self.status.setText(str(error))
            return
        hub = self._service.current_hub()
        for server in config.servers.values():
            state = "disabled" if server.disabled else "not started"
            if hub is not None and server.name in hub.config.servers:
                status = hub.status(server.name)
                state = status.state + (f": {status.error}" if status.error else "")
            item = QTreeWidgetItem([server.name, state])
            item.setToolTip(0, server.describe())
            item.setData(0, Qt.ItemDataRole.UserRole, server.name)
            self.tree.addTopLevelItem(item)
        self.status.setText(
            f"{len(config.servers)} server(s) in {self._service.config_path}" if config.servers
            else f"No MCP servers yet. Add them to {self._service.config_path} or import Claude Desktop's."
        )

    def list_tools(self) -> None:
        self.list_button.setEnabled(False)
        self.status.setText("Starting the servers\u2026")
        service = self._service

        def work() -> None:
            listing: dict[str, tuple[list, str, str]] = {}
            try:
                hub = service.hub()
                for server in hub.config.enabled():
                    try:
                        listing[server.name] = (hub.tools(server.name), "", hub.stderr(server.name))
                    except McpError as error:
                        listing[server.name] = ([], str(error), hub.stderr(server.name))
            except McpError as error:
                listing[""] = ([], str(error), "")
            self._listed.emit(listing)

        threading.Thread(target=work, name="mcp-list", daemon=True).start()

    def _show_listing(self, listing: dict) -> None:
        self.list_button.setEnabled(True)
        if "" in listing:
            self.status.setText(listing[""][1])
            return
        self.reload()
        permissions = self._settings.tool_permissions
        for index in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(index)
            name = item.data(0, Qt.ItemDataRole.UserRole)
            if name not in listing:
                continue
            tools, error, stderr = listing[name]
            self._logs[name] = stderr
            item.setText(1, f"failed: {error}" if error else f"running \u00b7 {len(tools)} tool(s)")
            if error or stderr:
                log = QPushButton("Show Log", self.tree)
                log.setObjectName("ServerLogButton")
                log.clicked.connect(lambda _=False, n=name, e=error: self.show_log(n, e))
                holder = QWidget(self.tree)
                row = QHBoxLayout(holder)
                row.setContentsMargins(0, 0, 0, 0)
                row.addWidget(QLabel(item.text(1), holder), 1)
                row.addWidget(log)
                item.setText(1, "")
                self.tree.setItemWidget(item, 1, holder)
            for tool in tools:
                child = QTreeWidgetItem([tool.name, ""])
                child.setToolTip(0, f"{tool.description}\n\n{json.dumps(dict(tool.input_schema), indent=2)}")
                item.addChild(child)
                combo = QComboBox(self.tree)
                for key, label in PERMISSIONS:
                    combo.addItem(label, key)
                combo.setCurrentIndex(max(combo.findData(permissions.get(f"{name}/{tool.name}", "ask")), 0))
                combo.currentIndexChanged.connect(
                    lambda _i, c=combo, s=name, t=tool.name: self._set_permission(s, t, c.currentData())
                )
                self.tree.setItemWidget(child, 1, combo)
            item.setExpanded(True)
        self.status.setText("Hover over a tool for its description and arguments.")

    def _set_permission(self, server: str, tool: str, permission: str) -> None:
        self._settings.set_tool_permission(server, tool, permission)
        # A turn running now must see it at its next call: taking "Always" back takes effect at once.
        self.permissionsChanged.emit()

    def show_log(self, server: str, error: str = "") -> QDialog:
        dialog = QDialog(self)
        dialog.setWindowTitle(f"MCP server \u201c{server}\u201d")
        layout = QVBoxLayout(dialog)
        if error:
            message = QLabel(error, dialog)
            message.setObjectName("ErrorNote")
            message.setWordWrap(True)
            layout.addWidget(message)
        layout.addWidget(QLabel("What the server wrote to stderr:", dialog))
        text = QPlainTextEdit(dialog)
        text.setObjectName("ServerLog")
        text.setReadOnly(True)
        text.setPlainText(self._logs.get(server, "") or "(nothing)")
        layout.addWidget(text)
        dialog.resize(560, 320)
        dialog.open()
        return dialog

    # --------------------------------------------------------------- files
    def open_config(self) -> None:
        path = self._service.config_path
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text('{\n  "mcpServers": {}\n}\n', encoding="utf-8")
        QDesktopServices.openUrl(QUrl.fromLocalFile(str(path)))

    def import_claude(self) -> None:
        try:
            report = import_claude_desktop(self._service.config_path)
        except McpConfigError as error:
            self.status.setText(str(error))
            return
        self.reload()
        added = ", ".join(report.added) or "nothing new"
        skipped = f" (kept ours: {', '.join(report.skipped)})" if report.skipped else ""
        self.status.setText(f"Imported from {report.source}: {added}{skipped}.")
