"""Start the desktop app: QApplication, theme, store, worker thread, main window."""

from __future__ import annotations

import logging
import os
import sys
from typing import Optional

from PySide6.QtCore import QCoreApplication, QTimer
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication

from app.quick_ask import tray
from app.window.main_window import MainWindow
from app.paths import APP_NAME, ORGANIZATION_DOMAIN, ORGANIZATION_NAME, data_dir
from app.window.preferences import MENU_BAR_ONLY
from app.settings import Settings
from app.chat.store import DATABASE_NAME, ConversationStore, StoreError
from app.window.theme import ThemeManager
from app.worker.worker import WorkerClient

log = logging.getLogger(__name__)
# Quitting waits at most this long, in total, for cancelled downloads to clean up and end.
DOWNLOAD_STOP_TIMEOUT_S = 2.0


def configure_application_identity() -> None:
    """Names QSettings and QStandardPaths use (macOS: ~/Library/Application Support/Qwen Desk)."""
    QCoreApplication.setApplicationName(APP_NAME)
    QCoreApplication.setOrganizationName(ORGANIZATION_NAME)
    QCoreApplication.setOrganizationDomain(ORGANIZATION_DOMAIN)
    QGuiApplication.setApplicationDisplayName(APP_NAME)


def _attach_documents(window: MainWindow, worker: WorkerClient, file_opens) -> None:
    """Document drops and Finder/Dock "open with" go to the document feature."""
    try:
        from app.documents.controller import DocumentController

        documents = DocumentController(
            window.chat, window.composer, worker, drop_targets=(window.transcript,),
            place_panel=window.add_bottom_panel, system_prompt=lambda: window.chat.system_prompt, parent=window)
    except Exception:  # noqa: BLE001 - chat must still work if the document feature can't start
        log.exception("the document feature could not start")
        file_opens.start_delivering()
        return
    file_opens.files_opened.connect(documents.open_files)
    window.documentsChosen.connect(documents.open_files)  # File > Open..., the paperclip
    from app.documents.drop_highlight import DropHighlight

    window.drop_highlight = DropHighlight(window.transcript.parentWidget(), documents.drop_filter)
    file_opens.start_delivering()


def _attach_quick_ask(app: QApplication, window: MainWindow, worker: WorkerClient, settings: Settings):
    """The menu-bar Quick Ask popup, sharing the worker (its jobs queue with the window's)."""
    try:
        from app.quick_ask.controller import QuickAskController
        from app.quick_ask.popup import QuickAskOptions
        from app.settings import sampling_preset

        def options() -> QuickAskOptions:
            return QuickAskOptions(
                system_prompt=settings.system_prompt,
                sampling=sampling_preset(settings.sampling_preset).params,
            )

        quick_ask = QuickAskController(worker, options_provider=options, parent=window)
    except Exception:  # noqa: BLE001 - an optional convenience; the main window stays usable
        log.exception("Quick Ask could not start")
        return None
    quick_ask.open_in_main_window.connect(window.start_chat_from_quick_ask)
    quick_ask.show_main_window.connect(window.bring_to_front)
    window.quickAskRequested.connect(quick_ask.show_popup)  # Window > Quick Ask, no tray needed
    quick_ask.quit_requested.connect(app.quit)
    shortcut_applier = None
    if tray.GlobalShortcut.supported():  # macOS only
        error = quick_ask.set_global_shortcut(settings.quick_ask_shortcut)
        if error:
            log.warning("Quick Ask shortcut: %s", error)
        shortcut_applier = quick_ask.set_global_shortcut
    window.set_quick_ask_features(menu_bar_available=quick_ask.has_menu_bar_icon(), shortcut_applier=shortcut_applier)
    return quick_ask


def _attach_local_server(window: MainWindow, worker: WorkerClient, settings: Settings):
    """The local server over the window's worker; it starts now if the Settings say so."""
    try:
        from app.server.controller import LocalServerController

        server = LocalServerController(worker, settings, parent=window)
    except Exception:  # noqa: BLE001 - an optional feature; chat must work without it
        log.exception("the local server could not be set up")
        return None
    window.set_local_server(server)
    state = server.apply_settings()
    if state.kind == "failed":
        log.warning("local server: %s", state.message)
    return server


def show_self_check_failure(window: MainWindow, worker: WorkerClient) -> None:
    """The worker's startup self-check failed (macOS: no usable GPU): say so in the window.

    A model load queued at startup fails with the same message right after (the window shows
    load failures itself); its signal comes later in the same order, so while that load is
    still pending this leaves the message to it rather than stacking two dialogs."""

    def show(message: str) -> None:
        if worker.loading:
            return
        from PySide6.QtCore import Qt
        from PySide6.QtWidgets import QMessageBox

        box = QMessageBox(QMessageBox.Icon.Critical, "Qwen Desk can\u2019t run models on this Mac", message, parent=window)
        box.setObjectName("selfCheckFailure")
        box.setWindowModality(Qt.WindowModality.WindowModal)
        box.open()

    worker.selfCheckFailed.connect(show)


def apply_menu_bar_only(app: QApplication, settings: Settings, quick_ask, *, at_start: bool = False) -> bool:
    """"Menu bar only": no Dock icon, and closing the window leaves the app in the menu bar.

    Only where a menu-bar icon exists (else the user could not reach the app again). Returns
    whether the app now lives in the menu bar only."""
    on = bool(settings.menu_bar_only and quick_ask is not None and quick_ask.has_menu_bar_icon())
    app.setQuitOnLastWindowClosed(not on)
    if on or not at_start:  # at launch a Regular app already has its Dock icon
        tray.set_dock_icon_visible(not on)
    return on


def shut_down_downloads(model_manager, timeout_s: float = DOWNLOAD_STOP_TIMEOUT_S) -> bool:
    """Cancel the Models window's downloads and wait for them briefly (it may never have opened).

    A thread left running would be killed mid-file at exit, leaving its partial download behind
    and possibly signalling Qt objects as they are destroyed. True when none is left running."""
    if model_manager is None:
        return True
    return model_manager.shut_down_downloads(timeout_s)


def run_gui(argv: Optional[list[str]] = None, files: Optional[list[str]] = None) -> int:
    """Open the app; ``files`` (from the command line) open in it. If Qwen Desk already runs
    for this user and data folder, hand it ``files``, bring it to the front and return 0."""
    from PySide6.QtCore import Qt

    from app.single_instance import SingleInstance, instance_name

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    configure_application_identity()
    if QApplication.instance() is None:
        QGuiApplication.setHighDpiScaleFactorRoundingPolicy(Qt.HighDpiScaleFactorRoundingPolicy.PassThrough)
    app = QApplication.instance() or QApplication(argv if argv is not None else sys.argv)
    from app.documents.file_open import FileOpenCollector

    # As early as possible: macOS sends "open this file" events during launch.
    file_opens = FileOpenCollector(app)
    instance = SingleInstance(instance_name(data_dir()), app)
    if instance.forward(list(files or [])):
        log.info("Qwen Desk is already running: handed it over")
        return 0
    instance.listen()
    # Later launches' files reach the documents as Finder's "open" events do.
    instance.filesReceived.connect(file_opens.files_opened)
    icon = tray.app_icon()
    if not icon.isNull():
        app.setWindowIcon(icon)
    settings = Settings()
    theme = ThemeManager(app, settings.theme)  # type: ignore[arg-type]

    try:
        store = ConversationStore(data_dir() / DATABASE_NAME)
    except StoreError as error:
        from PySide6.QtWidgets import QMessageBox

        QMessageBox.critical(None, "Qwen Desk can\u2019t start", str(error))
        return 1

    worker = WorkerClient()
    window = MainWindow(store, worker, settings, theme_manager=theme)
    show_self_check_failure(window, worker)
    theme.changed.connect(window.apply_theme)
    _attach_documents(window, worker, file_opens)
    from app.tools.attach import attach_tools

    tools = attach_tools(window, settings)  # the hub starts servers only when a turn needs them
    quick_ask = _attach_quick_ask(app, window, worker, settings)
    window.menus.quick_ask_action.setEnabled(quick_ask is not None)
    local_server = _attach_local_server(window, worker, settings)
    apply_menu_bar_only(app, settings, quick_ask, at_start=True)

    def on_preference_changed(name: str) -> None:
        if name == MENU_BAR_ONLY:
            apply_menu_bar_only(app, settings, quick_ask)

    window.preferencesChanged.connect(on_preference_changed)
    instance.activationRequested.connect(window.bring_to_front)
    window.show()
    if files:
        QTimer.singleShot(0, lambda: instance.filesReceived.emit(list(files)))

    if settings.model:
        from app.models.speed_up import load_options

        # In the background (the window is usable at once), with its speed-up (Models window).
        worker.load_model(settings.model, load_options(settings.speed_up(settings.model)))
    else:
        QTimer.singleShot(0, lambda: window.open_model_manager(first_run=True))
    last = settings.last_conversation
    if last and store.conversation(last) is not None:
        window.chat.open_conversation(last)

    worker_stopped = [True]

    def shut_down() -> None:
        window.chat.flush()
        if quick_ask is not None:
            quick_ask.set_global_shortcut("")
        shut_down_downloads(window.model_manager)  # logs any download that would not stop
        if local_server is not None:
            local_server.stop()  # bounded: its requests end at once, the thread is a daemon
        # Cancels the running job and waits a bounded time: the engine honours a cancel
        # between prefill chunks and tokens, so this is quick.
        worker_stopped[0] = worker.shutdown()
        tools.service.close()  # stops the MCP servers, in bounded time
        store.close()
        instance.close()

    app.aboutToQuit.connect(shut_down)
    code = app.exec()
    if not worker_stopped[0]:
        # The job is stuck in native code. Destroying its running QThread would abort the
        # process, and waiting on would keep a hidden app alive: leave now, saved and closed.
        log.warning("the worker thread did not stop in time; exiting without it")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code
