"""The main window: sidebar of chats, the transcript, the composer, menus and the status bar.

Owns no model and runs no MLX: it talks to the worker through ``WorkerClient`` and to the
conversation logic through ``ChatController``.

Extension points for the document feature (DOCS):
- ``add_bottom_panel(widget)``: a panel between the transcript and the composer.
- ``composer.add_attachment(Attachment)``: a chip that is sent with the next message.
- ``chat.send(text, attachments)``, ``chat.set_job_builder(builder)``: see ``ChatController``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QAction, QCloseEvent
from PySide6.QtWidgets import (
    QApplication,
    QHBoxLayout,
    QLabel,
    QMainWindow,
    QMessageBox,
    QPushButton,
    QSplitter,
    QToolButton,
    QVBoxLayout,
    QWidget,
)

from app.chat.controller import ChatController
from app.chat.composer import Composer
from app.chat.conversation_list import ConversationList
from app.chat.export import export_conversation
from app.chat.settings_panel import ChatSettingsDialog
from app.window.preferences import (
    SAMPLING_PRESET, SERVER_ENABLED, SERVER_SETTINGS, THEME, PreferencesDialog, ShortcutApplier)
from app.chat.rendering import RenderColors
from app.settings import Settings
from app.window.menus import WindowMenus
from app.window.model_picker import ModelPicker
from app.window.reasoning_button import ReasoningButton
from app.models.speed_up import load_options
from app.window.status_panel import StatusPanel, display_name
from app.window.theme import ThemeManager
from app.chat.store import ConversationStore
from app.chat.transcript import TranscriptView
from app.worker.worker import LoadProgress, WorkerClient



# The transcript keeps this much height however many panels sit below it.
TRANSCRIPT_MIN_HEIGHT = 140


class MainWindow(QMainWindow):
    # A setting changed in the Settings window (a ``app.window.preferences`` name, e.g. "menu_bar_only").
    preferencesChanged = Signal(str)
    # Files picked with File > Open... or the composer's paperclip (the document feature reads them).
    documentsChosen = Signal(list)
    # Window > Quick Ask (the app connects the popup; works where no tray icon exists).
    quickAskRequested = Signal()
    # True once a model is loaded and ready to answer; False while loading, after a failure or
    # an eject (for whatever must not offer sending without a model, e.g. the composer).
    modelReadyChanged = Signal(bool)

    def __init__(
        self,
        store: ConversationStore,
        worker: WorkerClient,
        settings: Settings,
        *,
        model_manager_factory: Optional[Callable[["MainWindow"], object]] = None,
        theme_manager: Optional[ThemeManager] = None,
        parent: Optional[QWidget] = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle("Qwen Desk")
        self.setUnifiedTitleAndToolBarOnMac(True)
        self.resize(1100, 760)
        self.setMinimumSize(QSize(640, 420))
        self.store = store
        self.worker = worker
        self.settings = settings
        # The export's save panel (QFileDialog); tests put a function here that returns a path.
        self.ask_export_path: Optional[Callable[[QWidget, str], str]] = None
        self._model_manager_factory = model_manager_factory
        self._model_manager = None
        self._theme_manager = theme_manager
        self._preferences: Optional[PreferencesDialog] = None
        # What the Settings window can offer: set_quick_ask_features, once Quick Ask is up.
        self._menu_bar_available = False
        self._shortcut_applier: Optional[ShortcutApplier] = None
        self.local_server = None  # app.server.controller.LocalServerController, once attached
        # The last model that loaded (a failed switch goes back to it) and the load under way.
        self._last_loaded = worker.model_name
        self._previous_model = ""
        self._load_target = ""
        self.last_load_error = ""
        self.last_load_notice = ""

        colors = RenderColors.from_palette(self.palette())
        self.sidebar = ConversationList(store, self)
        self.transcript = TranscriptView(colors, self)
        self.composer = Composer(self)
        self.status_panel = StatusPanel(self)
        self.setStatusBar(self.status_panel)
        self.chat = ChatController(store, worker, self.transcript, settings, self)
        self._build_top_bar()
        self._build_layout()
        self.menus = WindowMenus(self)
        self.menus.add_reasoning_menu(self.reasoning_button.menu())
        self._connect()
        self.sidebar.refresh()
        self._refresh_send_state()
        self._refresh_model_picker()
        self.status_panel.show_model(worker.model_info, worker.model_name)
        self._update_thinking_toggle()
        if settings.window_geometry.size():
            self.restoreGeometry(settings.window_geometry)
        if settings.splitter_state.size():
            self.splitter.restoreState(settings.splitter_state)

    # --------------------------------------------------------------- layout
    def _build_top_bar(self) -> None:
        self.top_bar = QWidget(self)
        self.top_bar.setObjectName("TopBar")
        self.top_bar.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        self.model_picker = ModelPicker(
            lambda: self.worker.model_name, lambda: list(self.settings.local_models),
            loading=lambda: self.worker.loading, parent=self.top_bar)
        self.thinking_toggle = QPushButton("Thinking", self.top_bar)
        self.thinking_toggle.setObjectName("ThinkingToggle")
        self.thinking_toggle.setCheckable(True)
        self.thinking_toggle.setChecked(self.settings.thinking_enabled)
        self.thinking_toggle.setToolTip("Let the model think before it answers")
        self.thinking_toggle.setCursor(Qt.CursorShape.PointingHandCursor)
        self.reasoning_button = ReasoningButton(self.top_bar)
        self.reasoning_button.set_choices(self.settings.reasoning_effort, self.settings.history_reasoning)
        self.load_label = QLabel("", self.top_bar)
        self.load_label.setObjectName("MutedLabel")
        self.chat_settings_button = QToolButton(self.top_bar)
        self.chat_settings_button.setObjectName("ChatSettingsButton")
        self.chat_settings_button.setText("Chat Settings")
        self.chat_settings_button.setToolTip("This chat\u2019s system prompt, sampling and length (\u2318;)")
        self.chat_settings_button.setCursor(Qt.CursorShape.PointingHandCursor)
        self.chat_settings_button.clicked.connect(self.open_chat_settings)
        self._chat_settings_dialog: Optional[ChatSettingsDialog] = None
        layout = QHBoxLayout(self.top_bar)
        layout.setContentsMargins(12, 6, 12, 6)
        layout.setSpacing(8)
        layout.addWidget(self.model_picker)
        layout.addWidget(self.thinking_toggle)
        layout.addWidget(self.reasoning_button)
        layout.addWidget(self.load_label)
        layout.addStretch(1)
        layout.addWidget(self.chat_settings_button)

    def _build_layout(self) -> None:
        chat_pane = QWidget(self)
        chat_pane.setObjectName("ChatPane")
        chat_pane.setAttribute(Qt.WidgetAttribute.WA_StyledBackground, True)
        composer_row = QHBoxLayout()
        composer_row.setContentsMargins(24, 4, 24, 16)
        composer_row.addStretch(1)
        composer_row.addWidget(self.composer, 100)
        composer_row.addStretch(1)
        self.composer.setMaximumWidth(800)
        pane_layout = QVBoxLayout(chat_pane)
        pane_layout.setContentsMargins(0, 0, 0, 0)
        pane_layout.setSpacing(0)
        pane_layout.addWidget(self.top_bar)
        pane_layout.addWidget(self.transcript, 1)
        self.transcript.setMinimumHeight(TRANSCRIPT_MIN_HEIGHT)  # panels scroll before it is squeezed
        pane_layout.addLayout(composer_row)
        self._pane_layout = pane_layout

        self.splitter = QSplitter(Qt.Orientation.Horizontal, self)
        self.splitter.setHandleWidth(1)
        self.splitter.setChildrenCollapsible(True)
        self.splitter.addWidget(self.sidebar)
        self.splitter.addWidget(chat_pane)
        self.splitter.setStretchFactor(0, 0)
        self.splitter.setStretchFactor(1, 1)
        self.splitter.setSizes([250, 850])
        self.sidebar.setMinimumWidth(180)
        self.setCentralWidget(self.splitter)

    def add_bottom_panel(self, widget: QWidget) -> None:
        """Place ``widget`` between the transcript and the composer, below earlier panels.

        It spans the chat pane; centre narrower content inside it. Hide it when it has nothing
        to show: a hidden panel takes no room."""
        self._pane_layout.insertWidget(self._pane_layout.count() - 1, widget)

    def _connect(self) -> None:
        self.composer.submitted.connect(self._on_submitted)
        self.composer.stopRequested.connect(self.stop)
        self.composer.attachRequested.connect(self.open_documents)
        self.composer.manageModelsRequested.connect(lambda: self.open_model_manager())
        self.sidebar.newChatRequested.connect(self.new_chat)
        self.sidebar.conversationSelected.connect(self.chat.open_conversation)
        self.sidebar.conversationDeleted.connect(self.chat.conversation_deleted)
        self.sidebar.conversationRenamed.connect(lambda *_: self._update_title())
        self.chat.conversationsChanged.connect(lambda: self.sidebar.refresh(select=self.chat.conversation_id))
        self.chat.conversationChanged.connect(self._on_conversation_changed)
        self.chat.generatingChanged.connect(self._on_generating)
        self.chat.statsChanged.connect(self.status_panel.show_stats)
        self.chat.liveStatsChanged.connect(self.status_panel.show_stats)
        self.chat.turnFinished.connect(lambda *_: self.sidebar.refresh())
        self.chat.chatSettingsChanged.connect(self._show_chat_settings_state)
        self.thinking_toggle.toggled.connect(self._set_thinking)
        self.reasoning_button.effortChosen.connect(self._set_reasoning_effort)
        self.reasoning_button.historyReasoningChosen.connect(self._set_history_reasoning)
        self.model_picker.modelChosen.connect(self._on_model_picked)
        self.model_picker.manageRequested.connect(self.open_model_manager)
        self.model_picker.ejectRequested.connect(self.unload_model)
        self.worker.loadStarted.connect(self._on_load_started)
        self.worker.loadProgress.connect(self._on_load_progress)
        self.worker.modelLoaded.connect(self._on_model_loaded)
        self.worker.modelLoadFailed.connect(self._on_model_load_failed)
        self.worker.loadNotice.connect(self._on_load_notice)
        self.worker.modelUnloaded.connect(self._on_model_unloaded)

    # ------------------------------------------------------------ commands
    def new_chat(self) -> None:
        self.chat.new_conversation()
        self.sidebar.select(None)
        self.composer.focus()

    def stop(self) -> None:
        self.chat.stop()

    def open_documents(self) -> list:
        """File > Open... and the paperclip: pick documents to attach to the next message."""
        paths = list(self.choose_documents())
        if paths:
            self.documentsChosen.emit(paths)
        return paths

    def choose_documents(self) -> list:
        """The file dialog (a seam for tests)."""
        from PySide6.QtWidgets import QFileDialog

        paths, _ = QFileDialog.getOpenFileNames(
            self, "Attach Documents", "",
            "Documents (*.pdf *.docx *.txt *.md *.markdown *.html *.htm *.csv *.json *.rtf);;All files (*)")
        return paths

    def open_quick_ask(self) -> None:
        self.quickAskRequested.emit()

    def regenerate_last(self) -> None:
        last = next((v for v in reversed(self.transcript.views) if v.role == "assistant"), None)
        if last is not None:
            self.chat.regenerate(last.message_id)

    def copy_last_answer(self) -> None:
        last = next((v for v in reversed(self.transcript.views) if v.role == "assistant"), None)
        if last is not None:
            last.copy_to_clipboard()
            self.status_panel.showMessage("Answer copied", 2000)

    def export_chat(self, *_: object) -> Optional[Path]:
        folder = Path(self.settings.export_folder or Path.home() / "Documents")
        path = export_conversation(self, self.store, self.chat.conversation_id,
                                   include_reasoning=self.settings.export_reasoning, folder=folder,
                                   ask_path=self.ask_export_path)
        if path is not None:
            self.settings.export_folder = str(path.parent)
            self.status_panel.showMessage(f"Exported {path.name}", 3000)
        return path

    def set_export_reasoning(self, include: bool) -> None:
        self.settings.export_reasoning = include

    def toggle_sidebar(self) -> None:
        visible = not self.sidebar.isVisible()
        self.sidebar.setVisible(visible)
        self.menus.toggle_sidebar_action.setChecked(visible)

    def focus_model_picker(self) -> None:
        self.model_picker.setFocus(Qt.FocusReason.ShortcutFocusReason)
        if self.isVisible():
            self.model_picker.showPopup()

    def open_preferences(self) -> PreferencesDialog:
        """The Settings window (one at a time; Cmd+, brings it back to the front)."""
        if self._preferences is None or not self._preferences.isVisible():
            if self._preferences is not None:
                self._preferences.deleteLater()
            dialog = PreferencesDialog(
                self.settings,
                self,
                menu_bar_available=self._menu_bar_available,
                shortcuts_supported=self._shortcut_applier is not None,
                shortcut_applier=self._shortcut_applier,
                server=self.local_server,
            )
            dialog.settingChanged.connect(self._on_preference_changed)
            self._preferences = dialog
        self._preferences.show()
        self._preferences.raise_()
        self._preferences.activateWindow()
        return self._preferences

    def set_quick_ask_features(self, *, menu_bar_available: bool,
                               shortcut_applier: Optional[ShortcutApplier]) -> None:
        """What Quick Ask offers the Settings window: the menu-bar icon, a global shortcut
        (``shortcut_applier`` None where the platform has none)."""
        self._menu_bar_available = menu_bar_available
        self._shortcut_applier = shortcut_applier

    def set_local_server(self, server) -> None:
        """Attach the app's local server: the Model menu switch, Settings and the status bar."""
        self.local_server = server
        self.menus.server_action.setEnabled(True)
        self.menus.server_action.setChecked(self.settings.server_enabled)
        show = lambda *_: self.status_panel.show_server(server.state, server.answering)  # noqa: E731
        server.stateChanged.connect(show)
        server.answeringChanged.connect(show)
        show()

    def follow_server_menu(self) -> None:
        self.settings.server_enabled = self.menus.server_action.isChecked()
        if self._preferences is not None:
            self._preferences.reload_choices()
        self._on_preference_changed(SERVER_ENABLED)

    def open_chat_settings(self) -> ChatSettingsDialog:
        """The chat's own settings, as a sheet over the window (Cmd+;)."""
        if self._chat_settings_dialog is not None:
            self._chat_settings_dialog.deleteLater()
        dialog = ChatSettingsDialog(self.chat.chat_settings, self.chat.chat_defaults(), self)
        dialog.settingsApplied.connect(self.chat.set_chat_settings)
        self._chat_settings_dialog = dialog
        dialog.open()
        return dialog

    def _show_chat_settings_state(self, chat: object) -> None:
        custom = not getattr(chat, "is_default", True)
        self.chat_settings_button.setText("Chat Settings \u2022" if custom else "Chat Settings")
        self.chat_settings_button.setAccessibleDescription("This chat has settings of its own" if custom else "")

    def edit_system_prompt(self) -> None:
        self.open_preferences().focus_system_prompt()

    def _on_preference_changed(self, name: str) -> None:
        if name == THEME:
            self._apply_theme_setting()
        elif name == SAMPLING_PRESET:
            for action in self.menus.sampling_group.actions():
                action.setChecked(action.data() == self.settings.sampling_preset)
        elif name in SERVER_SETTINGS:
            self.menus.server_action.setChecked(self.settings.server_enabled)
            if self.local_server is not None:
                self.local_server.apply_settings()
        self.preferencesChanged.emit(name)

    def show_about(self) -> None:
        QMessageBox.about(
            self,
            "About Qwen Desk",
            "<b>Qwen Desk</b><br>Qwen3, Qwen3.5, Qwen3.6, Qwen3.8 and Qwen3-Next models, "
            "running locally on this Mac with MLX.<br>"
            "Conversations never leave your computer.",
        )

    def toggle_zoom(self) -> None:
        self.showNormal() if self.isMaximized() else self.showMaximized()

    def bring_to_front(self) -> None:
        if self.isMinimized():
            self.showNormal()
        self.show()
        self.raise_()
        self.activateWindow()

    def start_chat_from_quick_ask(self, question: str, answer: str, outcome: str = "complete") -> None:
        """Continue a Quick Ask exchange here: a new stored chat holding the question and answer
        (``outcome`` "stopped": the answer keeps its Stopped label)."""
        if self.chat.generating:
            self.bring_to_front()
            return
        self.chat.import_exchange(question, answer, stopped=outcome == "stopped")
        self.bring_to_front()
        self.composer.focus()

    # --------------------------------------------------------------- models
    def open_model_manager(self, first_run: bool = False) -> object:
        if self._model_manager is None:
            if self._model_manager_factory is not None:
                manager = self._model_manager_factory(self)
            else:
                from app.models.manager import ModelManager

                manager = ModelManager(self.settings, self)
            manager.modelChosen.connect(self.load_model)
            manager.speedUpChanged.connect(self._on_speed_up_changed)
            manager.modelsChanged.connect(self._refresh_model_picker)
            self._model_manager = manager
        manager = self._model_manager
        manager.set_loaded(self.worker.model_name, self.worker.model_info)
        manager.show()
        manager.raise_()
        if first_run:
            manager.show_recommended()
        return manager

    @property
    def model_manager(self) -> object:
        return self._model_manager

    @property
    def model_ready(self) -> bool:
        return bool(self.worker.model_name) and not self.worker.loading

    def load_model(self, path_or_repo: str) -> None:
        """Switch to ``path_or_repo``; it is remembered for the next launch only once it loads."""
        if self.chat.generating:
            self.chat.stop()
        self._queue_load(path_or_repo)
        self._refresh_send_state(path_or_repo)
        self._refresh_model_picker()

    def _queue_load(self, key: str) -> None:
        """Load ``key`` with its speed-up (Models window): a draft model or its MTP heads."""
        self.worker.load_model(key, load_options(self.settings.speed_up(key)))

    def _on_speed_up_changed(self, key: str) -> None:
        """The Models window changed ``key``'s speed-up. For the model in use, reload it now
        (after the answer that may be streaming): whoever picks a draft model expects the next
        answer to use it, and a reload takes seconds. Quote-aware drafting needs none (it is
        sent with each request)."""
        current = self.worker.loading or self.worker.model_name
        if key != current or load_options(self.settings.speed_up(key)) == self.worker.speed_up:
            return
        self._queue_load(key)
        self._refresh_send_state(key)
        self.status_panel.showMessage(f"Reloading {display_name(key)} with the new speed-up\u2026", 5000)

    def _on_load_notice(self, message: str) -> None:
        """Loaded, but without the speed-up asked for: say why, where the user looks."""
        self.last_load_notice = message
        self.status_panel.showMessage(message, 15000)
        manager = self._model_manager
        if manager is not None:
            manager.note_speed_up_failed(self.worker.loading, message)

    def unload_model(self) -> None:
        """Eject: free the loaded model's memory; nothing loads at the next launch either."""
        if not self.worker.model_name and not self.worker.loading:
            return
        if self.chat.generating:
            self.chat.stop()
        self.settings.model = ""
        self.worker.unload_model()

    def _on_model_unloaded(self) -> None:
        self._last_loaded = ""
        self.status_panel.show_model(None, "")
        self.transcript.set_empty_subtitle("No model is loaded. Choose one in the model picker above.")
        self._model_state_changed()

    def _refresh_model_picker(self) -> None:
        self.model_picker.refresh()

    def _on_model_picked(self, key: str) -> None:
        if key != self.worker.model_name:
            self.load_model(key)

    def _refresh_send_state(self, loading: str = "") -> None:
        name = loading or (self.worker.loading if isinstance(self.worker.loading, str) else "")
        if name:
            self.composer.set_model_ready(False, f"Wait until {display_name(name)} has loaded")
        else:
            self.composer.set_model_ready(self.worker.model_info is not None)

    def _model_state_changed(self) -> None:
        self._refresh_model_picker()
        self._update_thinking_toggle()
        self._refresh_send_state()
        self.menus.eject_action.setEnabled(bool(self.worker.model_name))
        if self._model_manager is not None:
            self._model_manager.set_loaded(self.worker.model_name, self.worker.model_info)
        self.modelReadyChanged.emit(self.model_ready)

    def _on_load_started(self, name: str) -> None:
        self._previous_model, self._load_target = self._last_loaded, name
        self._refresh_send_state(name or "the model")
        self.status_panel.clear_stats()
        self.status_panel.show_loading(name)
        self.load_label.setText("")  # the picker says "Loading …"; this label shows download progress
        self.transcript.set_empty_subtitle(f"Loading {display_name(name)}\u2026")
        self._model_state_changed()  # the previous model's switches no longer apply

    def _on_load_progress(self, progress: LoadProgress) -> None:
        self.status_panel.show_load_progress(progress.fraction)
        if progress.fraction is not None:
            self.load_label.setText(f"Downloading\u2026 {100 * progress.fraction:.0f}%")

    def _on_model_loaded(self, info: object) -> None:
        self.load_label.setText("")
        self.composer.set_model_ready(True)
        name = self.worker.model_name
        self.status_panel.show_model(info, name)
        self.transcript.set_empty_subtitle(f"{display_name(name)} runs on this Mac. Nothing leaves it.")
        self._last_loaded = name
        self.settings.model = name  # remembered for the next launch now that it has loaded
        self._model_state_changed()

    def _on_model_load_failed(self, message: str) -> None:
        self.load_label.setText("")
        self.composer.set_model_ready(self.worker.model_info is not None)
        self.status_panel.show_load_failed(message)
        failed, previous = self._load_target, self._previous_model
        if self.settings.model == failed:
            self.settings.model = ""  # never retried at the next launch
        going_back = bool(previous) and previous != failed
        if going_back:
            after = f"Going back to {display_name(previous)}."
            self._queue_load(previous)
        else:
            self._last_loaded = ""
            after = "No model is loaded now. Choose another in the model picker or in Model \u203a Manage Models\u2026"
            self.transcript.set_empty_subtitle("No model is loaded. Choose one with Model \u203a Manage Models\u2026")
        self.last_load_error = message
        title = f"{display_name(failed)} could not be loaded" if failed else "The model could not be loaded"
        box = QMessageBox(QMessageBox.Icon.Warning, title, message, parent=self)
        box.setInformativeText(after)
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.open()  # not exec(): the event loop (and the worker's signals) keep running
        self._load_error_box = box
        self._model_state_changed()

    def _update_thinking_toggle(self) -> None:
        info = self.worker.model_info
        mode = getattr(info, "thinking_mode", None)
        # 2507 Instruct never thinks and 2507 Thinking always does: no switch to offer.
        hybrid = info is None or mode == "hybrid"
        self.thinking_toggle.setVisible(hybrid and info is not None)
        self.menus.thinking_action.setEnabled(hybrid and info is not None)
        thinks = self._thinks(info)
        if self.thinking_toggle.isChecked() != thinks:
            # Show the model's own default while the user hasn't chosen; not a choice to save.
            for control in (self.thinking_toggle, self.menus.thinking_action):
                control.blockSignals(True)
                control.setChecked(thinks)
                control.blockSignals(False)
        # Effort and earlier reasoning: only what this model's template takes.
        self.reasoning_button.set_model(info)
        self.reasoning_button.set_thinking(mode == "always" or (mode == "hybrid" and thinks))

    def _thinks(self, info: object) -> bool:
        """Will this model think with the user's switch as it is (or the model's default)?"""
        choice = self.settings.thinking_choice
        return choice if choice is not None else bool(getattr(info, "thinks_by_default", True))

    def _set_thinking(self, on: bool) -> None:
        self.settings.thinking_enabled = on
        self.menus.thinking_action.setChecked(on)
        self.reasoning_button.set_thinking(on)

    def _set_reasoning_effort(self, level: str) -> None:
        self.settings.reasoning_effort = level

    def _set_history_reasoning(self, value: str) -> None:
        self.settings.history_reasoning = value  # type: ignore[assignment]

    def follow_thinking_menu(self) -> None:
        self.thinking_toggle.setChecked(self.menus.thinking_action.isChecked())

    # ---------------------------------------------------------------- chat
    def _on_submitted(self, text: str, attachments: list) -> None:
        self.chat.send(text, attachments)

    def _on_generating(self, generating: bool) -> None:
        self.composer.set_generating(generating)
        self.menus.stop_action.setEnabled(generating)
        self.menus.escape_shortcut.setEnabled(generating)
        self.menus.regenerate_action.setEnabled(not generating)
        if generating:
            self.status_panel.clear_stats()

    def _on_conversation_changed(self, conversation_id: Optional[str]) -> None:
        self.sidebar.select(conversation_id)
        self._update_title()
        if self.chat.streaming_conversation_id == conversation_id and conversation_id is not None:
            return  # the live figures speak for this chat
        # The status bar speaks for the chat on screen: its last answer's figures, or none.
        self.status_panel.clear_stats()
        stats = self._last_stats(conversation_id)
        if stats:
            self.status_panel.show_stats(stats)
        else:
            self.status_panel.show_context(None)

    def _last_stats(self, conversation_id: Optional[str]) -> Optional[dict]:
        """The stats of the conversation's last answer that has them (None: a new chat)."""
        if not conversation_id:
            return None
        for message in reversed(self.store.messages(conversation_id)):
            if message.role == "assistant" and message.stats and "prompt_tokens" in message.stats:
                return dict(message.stats)
        return None


    def _update_title(self) -> None:
        conversation_id = self.chat.conversation_id
        conversation = self.store.conversation(conversation_id) if conversation_id else None
        self.setWindowTitle(f"{conversation.title} \u2014 Qwen Desk" if conversation else "Qwen Desk")

    def choose_theme(self, action: QAction) -> None:
        self.settings.theme = action.data()
        self._apply_theme_setting()
        if self._preferences is not None:
            self._preferences.reload_choices()

    def choose_sampling(self, action: QAction) -> None:
        self.settings.sampling_preset = action.data()
        if self._preferences is not None:
            self._preferences.reload_choices()

    def _apply_theme_setting(self) -> None:
        theme = self.settings.theme
        for action in self.menus.theme_group.actions():
            action.setChecked(action.data() == theme)
        if self._theme_manager is not None:
            self._theme_manager.set_theme(theme)

    def apply_theme(self, _tokens: object = None) -> None:
        self.transcript.set_colors(RenderColors.from_palette(QApplication.palette()))

    # ------------------------------------------------------------- lifecycle
    def closeEvent(self, event: QCloseEvent) -> None:  # noqa: N802 (Qt API)
        self.chat.flush()
        self.settings.window_geometry = self.saveGeometry()
        self.settings.splitter_state = self.splitter.saveState()
        super().closeEvent(event)
