"""One Qwen Desk per user (and data folder): a second launch hands its files to the first.

The first instance listens on a QLocalServer named after the data folder. A later launch
connects, sends the files it was given (command line, Finder), waits for the answer and exits;
the running app opens the files and comes to the front. Two copies would each load their own
model into memory, so this also protects the Mac's memory.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import logging
from pathlib import Path
from typing import Optional

from PySide6.QtCore import QObject, Signal
from PySide6.QtNetwork import QLocalServer, QLocalSocket

log = logging.getLogger(__name__)
CONNECT_TIMEOUT_MS = 1000
# The running app answers from its event loop, which a heavy moment (building the Models
# window) can hold for a few seconds.
REPLY_TIMEOUT_MS = 15000
ACK = b"ok\n"


def instance_name(data_folder: Path) -> str:
    """A socket name unique to this user and data folder (tests use their own folder)."""
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name: the folder alone still separates setups
        user = ""
    digest = hashlib.sha256(f"{user}\0{data_folder.resolve()}".encode()).hexdigest()[:16]
    return f"qwen-desk-{digest}"


class SingleInstance(QObject):
    """``forward(files)`` from a second launch; ``listen()`` in the first, which then emits
    ``filesReceived(list)`` and ``activationRequested`` for each later launch."""

    filesReceived = Signal(list)
    activationRequested = Signal()

    def __init__(self, name: str, parent: Optional[QObject] = None) -> None:
        super().__init__(parent)
        self.name = name
        self._server: Optional[QLocalServer] = None
        self._buffers: dict[QLocalSocket, bytes] = {}

    def forward(self, files: list[str]) -> bool:
        """Hand ``files`` to a running instance. True when one took them (then exit)."""
        socket = QLocalSocket()
        socket.connectToServer(self.name)
        if not socket.waitForConnected(CONNECT_TIMEOUT_MS):
            return False
        socket.write(json.dumps({"files": files}).encode() + b"\n")
        socket.flush()
        reply = b""
        while ACK not in reply and socket.waitForReadyRead(REPLY_TIMEOUT_MS):
            reply += bytes(socket.readAll().data())
        socket.disconnectFromServer()
        if ACK not in reply:
            # It is there (it took the connection) but busy: a second copy would load a second
            # model into memory, so don't start one.
            log.warning("the running Qwen Desk did not answer in time")
        return True

    def listen(self) -> bool:
        """Become the instance later launches talk to. False (logged) if the name can't be taken."""
        server = QLocalServer(self)
        server.setSocketOptions(QLocalServer.SocketOption.UserAccessOption)
        if not server.listen(self.name):
            # A crashed instance leaves its socket file behind: nobody answered it, so take it over.
            QLocalServer.removeServer(self.name)
            if not server.listen(self.name):
                log.warning("single instance: could not listen on %s: %s", self.name, server.errorString())
                return False
        server.newConnection.connect(self._on_connection)
        self._server = server
        return True

    def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None

    def _on_connection(self) -> None:
        assert self._server is not None
        while (socket := self._server.nextPendingConnection()) is not None:
            self._buffers[socket] = b""
            socket.readyRead.connect(lambda s=socket: self._on_ready(s))
            socket.disconnected.connect(lambda s=socket: self._forget(s))

    def _forget(self, socket: QLocalSocket) -> None:
        self._buffers.pop(socket, None)
        socket.deleteLater()

    def _on_ready(self, socket: QLocalSocket) -> None:
        data = self._buffers.get(socket, b"") + bytes(socket.readAll().data())
        self._buffers[socket] = data
        if b"\n" not in data:
            return
        line = data.split(b"\n", 1)[0]
        try:
            message = json.loads(line)
            files = [str(f) for f in message.get("files", []) if isinstance(f, str)]
        except (ValueError, AttributeError):
            log.warning("single instance: ignoring an unreadable message")
            files = []
        socket.write(ACK)
        socket.flush()
        self.activationRequested.emit()
        if files:
            self.filesReceived.emit(files)
