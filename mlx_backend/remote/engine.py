"""``RemoteEngine``: the worker's engine, answering from our OpenAI-compatible server.

``stream(request, cancel)`` keeps the local engine's contract: a request the server refuses
before any work (too long, bad settings) raises ``RequestError`` / ``ContextOverflowError``
from ``stream`` itself; otherwise ``PrefillProgress``, ``ThinkingDelta``, ``AnswerDelta``,
``ToolCallEvent`` and exactly one ``Finished`` ("cancelled" after ``cancel``; "error" after a
``Failed``).

The HTTP stream is read on a thread of its own and handed over through a queue, so the caller
is never stuck in a socket read: a cancel is seen within ``POLL_S`` (and the connection is then
shut, which cancels the server's run), a server process that dies is reported with its last
stderr line, and a server that goes silent fails after ``idle_timeout_s``.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
import time
from typing import Any, Iterator, Optional

import httpx2

from mlx_backend.errors import ContextOverflowError, QwenDeskError, RequestError
from mlx_backend.events import ChatRequest, Failed, Finished
from mlx_backend.remote.info import RemoteModelInfo
from mlx_backend.remote.process import ServerProcess
from mlx_backend.remote.replies import ReplyReader, sse_events
from mlx_backend.remote.requests import chat_body

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 5.0
# The server sends a prefill comment after every prefill chunk and a chunk per token, so a
# minute of silence means it is stuck (a rank that hangs), not slow.
IDLE_TIMEOUT_S = 60.0
# How often the waiting side checks the cancel event and the server process.
POLL_S = 0.05
# After a broken stream, how long to wait for the process to show it has ended.
EXIT_GRACE_S = 2.0


class RemoteError(QwenDeskError):
    """The server could not be reached or answered with something other than a model."""


class _End:
    """The reader thread's last item: ``error`` set when the stream broke."""

    def __init__(self, error: Optional[BaseException] = None) -> None:
        self.error = error


class RemoteEngine:
    """An engine served over HTTP. One request at a time, as the worker runs them."""

    def __init__(
        self,
        base_url: str,
        info: RemoteModelInfo,
        *,
        api_key: Optional[str] = None,
        process: Optional[ServerProcess] = None,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        connect_timeout_s: float = CONNECT_TIMEOUT_S,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.info = info
        self._api_key = api_key
        self._process = process
        self._idle_timeout_s = idle_timeout_s
        self._timeout = httpx2.Timeout(connect=connect_timeout_s, read=idle_timeout_s, write=30.0, pool=connect_timeout_s)
        # "The group" on several Macs, "The server" for a plain one: the subject of messages.
        self._subject = "The group" if info.where else "The server"

    @classmethod
    def connect(
        cls, base_url: str, *, api_key: Optional[str] = None, where: str = "",
        process: Optional[ServerProcess] = None, **options: Any,
    ) -> "RemoteEngine":
        """Read the served model from ``GET /v1/models``; ``RemoteError`` if there is none."""
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        url = base_url.rstrip("/") + "/v1/models"
        try:
            with httpx2.Client(timeout=CONNECT_TIMEOUT_S, trust_env=False) as client:
                response = client.get(url, headers=headers)
        except httpx2.TransportError as error:
            raise RemoteError(f"Could not reach the server at {base_url}: {_words(error)}.") from None
        if response.status_code != 200:
            raise RemoteError(f"The server at {base_url} answered {response.status_code}: {_error_message(response)}")
        entries = response.json().get("data") or []
        if not entries:
            raise RemoteError(f"The server at {base_url} has no model loaded.")
        return cls(base_url, RemoteModelInfo.from_models_entry(entries[0], where=where), api_key=api_key, process=process, **options)

    # ----------------------------------------------------------------- stream
    def stream(self, request: ChatRequest, cancel: Optional[threading.Event] = None) -> Iterator[object]:
        cancel = cancel or threading.Event()
        body = chat_body(request, self.info.name)  # RequestError for what no remote model takes
        started_at = time.monotonic()
        client = httpx2.Client(timeout=self._timeout, trust_env=False)
        headers = {"Authorization": f"Bearer {self._api_key}"} if self._api_key else {}
        try:
            response = client.send(client.build_request("POST", f"{self.base_url}/v1/chat/completions", json=body, headers=headers), stream=True)
        except httpx2.TransportError as error:
            client.close()
            return self._failure(self._lost(error), ReplyReader(started_at))
        if response.status_code != 200:
            response.read()
            response.close()
            client.close()
            message = _error_message(response)
            if response.status_code == 400:
                raise (ContextOverflowError if _error_code(response) == "context_length_exceeded" else RequestError)(message)
            return self._failure(f"{self._subject} could not answer: {message}", ReplyReader(started_at))
        return self._events(client, response, cancel, ReplyReader(started_at))

    def _events(self, client: httpx2.Client, response: httpx2.Response, cancel: threading.Event, reader: ReplyReader) -> Iterator[object]:
        items: "queue.Queue[object]" = queue.Queue()
        stop = threading.Event()

        def read() -> None:
            try:
                for line in response.iter_lines():
                    if stop.is_set():
                        break
                    items.put(line)
                items.put(_End())
            except Exception as error:  # noqa: BLE001 - any break is reported by the consumer
                items.put(_End(None if stop.is_set() else error))
            finally:
                response.close()
                client.close()

        thread = threading.Thread(target=read, name="remote-stream", daemon=True)
        thread.start()
        finished = False
        try:
            for event in sse_events(self._lines(items, cancel, stop)):
                for out in reader.read(event):
                    if isinstance(out, Failed):
                        yield out
                        yield Finished("error", reader.finished().stats)
                        finished = True
                        return
                    yield out
                if reader.done:
                    yield reader.finished()
                    finished = True
                    return
            if cancel.is_set():
                yield Finished("cancelled", reader.finished().stats)
            else:
                yield Failed(self._ended_early())
                yield Finished("error", reader.finished().stats)
            finished = True
        except _StreamBroken as broken:
            yield Failed(broken.message)
            yield Finished("error", reader.finished().stats)
            finished = True
        finally:
            if not finished or cancel.is_set():
                stop.set()
                _shut(response)  # the server sees the disconnect and cancels its run

    def _lines(self, items: "queue.Queue[object]", cancel: threading.Event, stop: threading.Event) -> Iterator[str]:
        """The stream's lines as they come; returns on cancel, raises ``_StreamBroken``."""
        last = time.monotonic()
        while True:
            if cancel.is_set():
                stop.set()
                return
            try:
                item = items.get(timeout=POLL_S)
            except queue.Empty:
                if self._process is not None and not self._process.running() and not cancel.is_set():
                    raise _StreamBroken(self._stopped_message())
                if time.monotonic() - last > self._idle_timeout_s:
                    raise _StreamBroken(f"{self._subject} sent nothing for {self._idle_timeout_s:.0f} s; it may have stopped answering.")
                continue
            last = time.monotonic()
            if isinstance(item, _End):
                if item.error is not None:
                    raise _StreamBroken(self._lost(item.error))
                return
            yield str(item)

    def _failure(self, message: str, reader: ReplyReader) -> Iterator[object]:
        yield Failed(message)
        yield Finished("error", reader.finished().stats)

    # --------------------------------------------------------------- messages
    def _process_ended(self) -> bool:
        return self._process is not None and (not self._process.running() or self._process.wait(EXIT_GRACE_S) is not None)

    def _stopped_message(self) -> str:
        assert self._process is not None
        self._process.drain_stderr()
        return f"{self._subject} stopped: {self._process.exit_message()}"

    def _lost(self, error: BaseException) -> str:
        if self._process_ended():
            return self._stopped_message()
        if isinstance(error, httpx2.TimeoutException):
            return f"{self._subject} sent nothing for {self._idle_timeout_s:.0f} s; it may have stopped answering."
        return f"Lost the connection to {self._subject.lower()} at {self.base_url}: {_words(error)}."

    def _ended_early(self) -> str:
        if self._process_ended():
            return self._stopped_message()
        return f"{self._subject} ended the answer before it was complete."


class _StreamBroken(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _shut(response: httpx2.Response) -> None:
    """Shut the connection's socket now (from any thread): a read blocked on it returns."""
    stream = response.extensions.get("network_stream")
    sock = stream.get_extra_info("socket") if stream is not None else None
    if isinstance(sock, socket.socket):
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def _error_message(response: httpx2.Response) -> str:
    try:
        error = response.json().get("error") or {}
        message = error.get("message") if isinstance(error, dict) else str(error)
    except (ValueError, AttributeError):
        message = ""
    return str(message or response.text[:200] or f"HTTP {response.status_code}")


def _error_code(response: httpx2.Response) -> Optional[str]:
    try:
        return (response.json().get("error") or {}).get("code")
    except (ValueError, AttributeError):
        return None


def _words(error: BaseException) -> str:
    return str(error) or type(error).__name__
