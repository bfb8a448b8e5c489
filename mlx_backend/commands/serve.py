"""``qwen-desk serve``: the local OpenAI- and Anthropic-compatible server, without the window.

The port is taken before the model loads, so a port in use is reported at once rather than
after a long load; the settings are checked even earlier (a network host needs a key). Ctrl-C
or SIGTERM stop it: running answers are cancelled, and the engine thread ends.
"""

from __future__ import annotations

import argparse
import errno
import os
import signal
import socket
import sys
from pathlib import Path

from mlx_backend.distributed.launcher import launched_in_group
from mlx_backend.distributed.watchdog import DEFAULT_RANK_TIMEOUT_S, DEFAULT_START_TIMEOUT_S
from mlx_backend.errors import QwenDeskError
from mlx_backend.server.settings import DEFAULT_HOST, DEFAULT_PORT, ServerSettings

KEY_ENV = "QWEN_DESK_API_KEY"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "serve",
        help="serve a local model over OpenAI- and Anthropic-compatible HTTP",
        description="Serve a local model at /v1/chat/completions, /v1/completions, /v1/messages "
        "and /v1/models, for the official openai and anthropic clients and OpenAI-compatible tools.",
    )
    parser.add_argument("--model", required=True, help="model folder or Hugging Face repo id")
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST}: this machine only)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0 picks a free one)")
    parser.add_argument(
        "--api-key",
        default=os.environ.get(KEY_ENV) or None,
        help=f"require this key from clients (default: ${KEY_ENV}); needed for any host but loopback",
    )
    parser.add_argument(
        "--allow-host", action="append", default=[], metavar="NAME",
        help="also answer requests that reach the server by this host name (repeatable)",
    )
    parser.add_argument(
        "--cors-origin", action="append", default=[], metavar="URL",
        help="let web pages from this origin call the server, e.g. http://localhost:3000 (repeatable)",
    )
    parser.add_argument(
        "--alias", action="append", default=[], metavar="ID",
        help="another model id to list in /v1/models, for clients that insist on one (repeatable)",
    )
    parser.add_argument("--model-id", help="the id clients pass as 'model' (default: the folder or repo name)")
    parser.add_argument("--max-queued", type=int, default=ServerSettings.max_queued, help="requests that may wait behind the running one (default %(default)s)")
    group = parser.add_argument_group("several Macs (one model across an mlx.launch group)")
    group.add_argument(
        "--hosts", metavar="HOSTS.JSON",
        help="start the group on the Macs of this mlx.launch host file and serve from its first host",
    )
    group.add_argument(
        "--rank-timeout", type=float, default=DEFAULT_RANK_TIMEOUT_S, metavar="SECONDS",
        help="stop the group when a rank gives no answer for this long (default %(default)g)",
    )
    group.add_argument(
        "--start-timeout", type=float, default=DEFAULT_START_TIMEOUT_S, metavar="SECONDS",
        help="how long starting the group may wait for every host to connect (default %(default)g)",
    )
    group.add_argument(
        "--split", choices=("layers", "replicas"), default="layers",
        help="layers: each Mac loads and runs only its run of layers (pipeline stages, for models "
             "bigger than one Mac); replicas: every Mac holds the whole model (default %(default)s)",
    )
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    settings = ServerSettings(
        host=args.host,
        port=args.port,
        api_key=args.api_key or None,
        allowed_hosts=tuple(args.allow_host),
        cors_origins=tuple(args.cors_origin),
        max_queued=args.max_queued,
        model_aliases=tuple(args.alias),
    ).check()
    if args.hosts:  # start the group on the host file's Macs; it runs this command on each
        from mlx_backend.distributed.launcher import serve_group

        return serve_group(args.hosts, group_arguments(args), api_key=settings.api_key)
    if launched_in_group():  # one rank of an mlx.launch group: rank 0 serves, the rest follow
        from mlx_backend.distributed.serving import serve_rank

        return serve_rank(args, settings, listen=listen, model_id=model_id(args), run_server=run_server)
    sock = listen(settings.host, settings.port)
    try:
        return _serve(args, settings, sock)
    finally:
        sock.close()


def listen(host: str, port: int) -> socket.socket:
    """A socket listening on ``host:port``, or a ``QwenDeskError`` that says why not."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(
            host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except socket.gaierror as error:
        raise QwenDeskError(f"Cannot listen on {host!r}: {error.strerror}.") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn: TIME_WAIT is no "in use"
        sock.bind(address)
        sock.listen(128)
    except OSError as error:
        sock.close()
        if error.errno == errno.EADDRINUSE:
            raise QwenDeskError(
                f"Port {port} on {host} is already in use (another qwen-desk serve, or the app's own "
                "server?). Stop that, or choose another port with --port."
            ) from None
        if error.errno == errno.EACCES:
            raise QwenDeskError(f"Not allowed to listen on port {port}; choose one above 1023 with --port.") from None
        raise QwenDeskError(f"Cannot listen on {host}:{port}: {error.strerror}.") from None
    sock.setblocking(False)
    return sock


def _serve(args: argparse.Namespace, settings: ServerSettings, sock: socket.socket) -> int:
    from mlx_backend import Engine  # MLX is imported only once the settings and port are fine
    from mlx_backend.commands.summarize import _download_progress
    from mlx_backend.server.backend import EngineBackend

    name = model_id(args)
    print(f"Loading {args.model}...", file=sys.stderr, flush=True)
    engine = Engine.load(args.model, progress=_download_progress(sys.stderr))
    return run_server(EngineBackend(engine, name), name, settings, sock)


def model_id(args: argparse.Namespace) -> str:
    return args.model_id or (Path(args.model).name if Path(args.model).exists() else args.model)


def group_arguments(args: argparse.Namespace) -> list[str]:
    """This command's options again, for every rank of a group (``--hosts`` left out)."""
    argv = ["--model", args.model, "--host", args.host, "--port", str(args.port),
            "--max-queued", str(args.max_queued), "--rank-timeout", f"{args.rank_timeout:g}",
            "--start-timeout", f"{args.start_timeout:g}", "--split", args.split]
    for flag, values in (("--allow-host", args.allow_host), ("--cors-origin", args.cors_origin), ("--alias", args.alias)):
        for value in values:
            argv += [flag, value]
    if args.model_id:
        argv += ["--model-id", args.model_id]
    # The key goes by the environment, not the command line other users' ps would show.
    return argv


def run_server(backend, model_id: str, settings: ServerSettings, sock: socket.socket, on_signal=None) -> int:
    """Serve ``backend`` on ``sock`` until Ctrl-C or SIGTERM (``on_signal`` is told of a Ctrl-C)."""
    import uvicorn

    from mlx_backend.server.app import create_app

    class Server(uvicorn.Server):
        def handle_exit(self, sig, frame) -> None:
            # Ctrl-C (or serve --hosts stopping the group) is a deliberate stop; a SIGTERM may be
            # mlx.launch ending the group after a rank failed, which is still reported as such.
            if on_signal is not None and sig == signal.SIGINT:
                on_signal()
            super().handle_exit(sig, frame)

    server = Server(
        uvicorn.Config(
            create_app(backend, settings),
            log_level="warning",
            lifespan="off",
            # Streams still running at shutdown are cut after this; leaving cancels their generation.
            timeout_graceful_shutdown=3,
        )
    )
    url = _url(sock)
    key = "$QWEN_DESK_API_KEY" if settings.api_key else "local"
    print(f"Serving {model_id} at {url}/v1 (OpenAI) and {url} (Anthropic). Ctrl-C stops.", flush=True)
    print(
        f"Try: curl {url}/v1/chat/completions -H 'Authorization: Bearer {key}' -H 'Content-Type: application/json' "
        f"-d '{{\"model\": \"{model_id}\", \"messages\": [{{\"role\": \"user\", \"content\": \"Hello\"}}]}}'",
        flush=True,
    )
    # uvicorn handles SIGINT/SIGTERM itself, then raises the signal again once it has stopped;
    # that second SIGTERM must end here too, not kill the process before the engine is closed.
    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        server.run(sockets=[sock])
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        backend.close()
    print("Server stopped.", file=sys.stderr, flush=True)
    return 0


def _stop(_signum, _frame) -> None:
    raise KeyboardInterrupt


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    if host in ("0.0.0.0", "::"):
        host = "127.0.0.1"  # what works from this machine; others use its network address
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"
