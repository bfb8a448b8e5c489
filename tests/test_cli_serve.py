"""``qwen-desk serve`` as a user runs it: a real process that serves /v1/models, refuses an open
host without a key, reports a port in use in one line, and stops cleanly on SIGINT/SIGTERM."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.support.checkpoints import write_random_checkpoint

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("serve-model") / "tiny-serve", max_position_embeddings=512)


def start(*args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "app.main", "serve", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})},
    )


def wait_for_url(process: subprocess.Popen, timeout: float = 120) -> str:
    """The base URL from the 'Serving ... at URL/v1' line."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"serve ended early: {process.wait(10)}\n{process.stderr.read()}")
        found = re.search(r"at (http://\S+)/v1 \(OpenAI\)", line)
        if found:
            return found.group(1)
    raise AssertionError("serve printed no URL")


def get_models(url: str, key: str | None = None) -> dict:
    request = urllib.request.Request(f"{url}/v1/models", headers={"Authorization": f"Bearer {key}"} if key else {})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def stop(process: subprocess.Popen, sig: int) -> tuple[int, str, str]:
    process.send_signal(sig)
    out, err = process.communicate(timeout=30)
    return process.returncode, out, err


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_serves_the_model_and_stops_cleanly_on_a_signal(model_dir, sig):
    process = start("--model", str(model_dir), "--port", "0")
    try:
        url = wait_for_url(process)
        assert [m["id"] for m in get_models(url)["data"]] == ["tiny-serve"]
        example = process.stdout.readline()
        assert example.startswith("Try: curl ") and f"{url}/v1/chat/completions" in example
    finally:
        code, _, err = stop(process, sig)
    assert code == 0, err
    assert "Server stopped." in err and "Traceback" not in err


def test_the_key_from_the_environment_is_required(model_dir):
    process = start("--model", str(model_dir), "--port", "0", "--alias", "gpt-4o-mini", env={"QWEN_DESK_API_KEY": "k-123"})
    try:
        url = wait_for_url(process)
        with pytest.raises(urllib.error.HTTPError) as refused:
            get_models(url)
        assert refused.value.code == 401
        assert [m["id"] for m in get_models(url, "k-123")["data"]] == ["tiny-serve", "gpt-4o-mini"]
    finally:
        stop(process, signal.SIGINT)


def test_an_open_host_without_a_key_exits_2_before_loading(tmp_path):
    missing = tmp_path / "no-model-here"  # never loaded: the settings are refused first
    result = subprocess.run(
        [sys.executable, "-m", "app.main", "serve", "--model", str(missing), "--host", "0.0.0.0"],
        cwd=ROOT, capture_output=True, text=True, timeout=60,
        env={k: v for k, v in os.environ.items() if k != "QWEN_DESK_API_KEY"} | {"PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 2
    assert result.stderr.startswith("qwen-desk: ") and "--api-key" in result.stderr
    assert "every network interface" in result.stderr and "Traceback" not in result.stderr


def test_a_port_in_use_is_one_clear_line(tmp_path):
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        result = subprocess.run(
            [sys.executable, "-m", "app.main", "serve", "--model", str(tmp_path / "unused"), "--port", str(port)],
            cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
    finally:
        taken.close()
    assert result.returncode == 2
    assert result.stderr.strip() == result.stderr.strip().splitlines()[0]  # one line
    assert f"Port {port} on 127.0.0.1 is already in use" in result.stderr and "--port" in result.stderr
