"""Small real MCP servers (written with the official SDK) that the MCP client tests start."""

from pathlib import Path

HERE = Path(__file__).resolve().parent
TOOLBOX = HERE / "toolbox.py"


def stdio_entry(*extra_args: str, env: dict[str, str] | None = None) -> dict:
    """A config entry that runs the toolbox over stdio with this interpreter."""
    import sys

    entry: dict = {"command": sys.executable, "args": [str(TOOLBOX), *extra_args]}
    if env:
        entry["env"] = env
    return entry


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_http(transport: str = "--http"):
    """Start the toolbox over HTTP in a child process; returns (process, port) once it accepts."""
    import socket
    import subprocess
    import sys
    import tempfile
    import time

    port = free_port()
    log = tempfile.TemporaryFile()  # not a pipe: a server's logging must never block it
    process = subprocess.Popen(
        [sys.executable, str(TOOLBOX), transport, str(port)], stdout=subprocess.DEVNULL, stderr=log
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"the HTTP test server exited: {log.read().decode(errors='replace')}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return process, port
        except OSError:
            time.sleep(0.05)
    process.kill()
    raise RuntimeError("the HTTP test server did not start")
