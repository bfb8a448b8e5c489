"""Starts and stops the local server (uvicorn in a daemon thread) as the Settings say.

The listening socket is bound here, on the GUI thread, before uvicorn starts, so a port in use
or a refused address is reported at once in words rather than lost in the server's thread.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import threading
from dataclasses import dataclass
from typing import Literal, Optional

from PySide6.QtCore import QObject, QTimer, Signal

from app.server.worker_backend import WorkerBackend
from app.settings import Settings
from app.worker.worker import WorkerClient
from mlx_backend.server.settings import DEFAULT_HOST, ServerSettings

log = logging.getLogger(__name__)

NETWORK_HOST = "0.0.0.0"
# Quitting or switching off waits at most this long for the server thread to end.
STOP_TIMEOUT_S = 3.0
# Responses still streaming when the server stops get this long to finish (they were cancelled).
GRACEFUL_SHUTDOWN_S = 1.0
NETWORK_NEEDS_KEY = ("Allowing other devices needs an API key, and none is set. "
                     "Turn \u201cAllow other devices on the network\u201d off and on again to make one.")

StateKind = Literal["stopped", "starting", "listening", "failed"]


@dataclass(frozen=True)
class ServerState:
    kind: StateKind
    url: str = ""  # what apps on this computer use, e.g. http://127.0.0.1:8765
    network_url: str = ""  # what other devices use (network mode only)
    message: str = ""  # why it failed


def server_settings(settings: Settings) -> ServerSettings:
    """How the server should listen, from the app's Settings."""
    if settings.server_allow_network:
        return ServerSettings(host=NETWORK_HOST, port=settings.server_port,
                              api_key=settings.server_api_key or None, allowed_hosts=lan_names())
    return ServerSettings(host=DEFAULT_HOST, port=settings.server_port)


def lan_names() -> tuple[str, ...]:
    """This computer's names and address on the network: what other devices put in Host."""
    names = []
    hostname = socket.gethostname()
    if hostname:
        names += [hostname, hostname if hostname.endswith(".local") else f"{hostname}.local"]
    address = lan_address()
    if address:
        names.append(address)
    return tuple(dict.fromkeys(names))


def lan_address() -> str:
    """The address other devices reach this one at ("" if there is no network)."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("10.255.255.255", 1))  # UDP: picks the outgoing interface, sends nothing
        return str(probe.getsockname()[0])
    except OSError:
        return ""
    finally:
        probe.close()


def bind_message(error: OSError, config: ServerSettings) -> str:
    if error.errno == errno.EADDRINUSE:
        return (f"Port {config.port} is already in use by another app. "
                f"Choose another port in Settings \u203a Local Server.")
    if error.errno == errno.EACCES:
        return f"Qwen Desk is not allowed to listen on port {config.port}. Choose a port above 1024."
    return f"The local server could not listen on {config.host}:{config.port}: {error.strerror or error}."


def _listen(config: ServerSettings) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        # As uvicorn does: a restart is not refused for connections still in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((config.host, config.port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


class LocalServerController(QObject):
    stateChanged = Signal(object)  # ServerState
    answeringChanged = Signal(bool)

    def __init__(self, worker: WorkerClient, settings: Settings, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self._worker = worker
        self._settings = settings
        self._state = ServerState("stopped")
        self._config: Optional[ServerSettings] = None
        self._backend: Optional[WorkerBackend] = None
        self._server = None
        self._thread: Optional[threading.Thread] = None
        self._socket: Optional[socket.socket] = None
        self._watch = QTimer(self)
        self._watch.setInterval(50)
        self._watch.timeout.connect(self._check_thread)

    @property
    def state(self) -> ServerState:
        return self._state

    @property
    def backend(self) -> Optional[WorkerBackend]:
        """The running server's backend (None while stopped)."""
        return self._backend

    @property
    def answering(self) -> bool:
        return self._backend is not None and self._backend.answering

    def apply_settings(self) -> ServerState:
        """Start, stop or restart so the server matches the Settings. Returns the new state."""
        wanted = server_settings(self._settings) if self._settings.server_enabled else None
        if wanted is not None and wanted == self._config and self._state.kind in ("starting", "listening"):
            return self._state
        self.stop()
        if wanted is not None:
            self._start(wanted)
        return self._state

    def stop(self, timeout_s: float = STOP_TIMEOUT_S) -> bool:
        """Stop listening; True once the server thread has ended (it is a daemon either way)."""
        self._watch.stop()
        stopped = True
        if self._backend is not None:
            self._backend.close()  # streaming responses end now, so the server can exit at once
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout_s)
            stopped = not self._thread.is_alive()
            if not stopped:
                log.warning("the local server did not stop within %.1f s", timeout_s)
        if self._socket is not None:
            self._socket.close()
        if self._backend is not None:
            self._backend.answeringChanged.disconnect(self.answeringChanged)
            self._backend.deleteLater()
        self._backend = self._server = self._thread = self._socket = None
        self._config = None
        if self._state.kind != "stopped":
            self._set_state(ServerState("stopped"))
        return stopped

    # ------------------------------------------------------------ internals
    def _start(self, config: ServerSettings) -> None:
        if not config.loopback_only and not config.api_key:
            self._set_state(ServerState("failed", message=NETWORK_NEEDS_KEY))
            return
        try:
            sock = _listen(config)
        except OSError as error:
            self._set_state(ServerState("failed", message=bind_message(error, config)))
            return
        import uvicorn

        from mlx_backend.server.app import create_app

        backend = WorkerBackend(self._worker, self)
        try:
            app = create_app(backend, config)
        except Exception as error:  # noqa: BLE001 - e.g. settings the security checks refuse
            sock.close()
            backend.close()
            backend.deleteLater()
            self._set_state(ServerState("failed", message=f"The local server could not start: {error}"))
            return
        backend.answeringChanged.connect(self.answeringChanged)
        server = uvicorn.Server(uvicorn.Config(
            app, log_config=None, log_level="warning", access_log=False, lifespan="off",
            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S))
        thread = threading.Thread(target=_serve, args=(server, sock), name="local-server", daemon=True)
        self._config, self._backend, self._server, self._thread, self._socket = config, backend, server, thread, sock
        self._set_state(ServerState("starting", *self._urls(config)))
        thread.start()
        self._watch.start()

    def _check_thread(self) -> None:
        if self._thread is None:
            self._watch.stop()
            return
        if not self._thread.is_alive():
            config = self._config
            self.stop()
            port = config.port if config else ""
            self._set_state(ServerState("failed", message=f"The local server on port {port} stopped unexpectedly."))
        elif self._state.kind == "starting" and self._server is not None and self._server.started:
            self._set_state(ServerState("listening", self._state.url, self._state.network_url))

    @staticmethod
    def _urls(config: ServerSettings) -> tuple[str, str]:
        local = f"http://{DEFAULT_HOST}:{config.port}"
        if config.loopback_only:
            return local, ""
        address = lan_address() or socket.gethostname()
        return local, f"http://{address}:{config.port}"

    def _set_state(self, state: ServerState) -> None:
        self._state = state
        self.stateChanged.emit(state)


def _serve(server, sock: socket.socket) -> None:
    try:
        asyncio.run(server.serve(sockets=[sock]))
    except Exception:  # noqa: BLE001 - the GUI notices the thread ended and says so
        log.exception("the local server stopped")
