"""The startup self-check: one real MLX operation, and, when Metal or its library can't be
used, a message that says what failed and what to do (in the CLI, the worker and the window).

Linux has no Metal, so the failure path is simulated the way MLX reports it: the GPU's first
operation raises RuntimeError("[metal::Device] Failed to load the default metallib. ...")."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mlx_backend import selfcheck
from mlx_backend.commands.cli import main as cli_main
from mlx_backend.selfcheck import SelfCheckError, run_self_check
from tests.support.paths import REPO_ROOT

# What mlx/backend/metal/device.cpp throws when no mlx.metallib sits beside libmlx.
MLX_METALLIB_ERROR = "[metal::Device] Failed to load the default metallib. library not found"


@pytest.fixture
def broken_metallib(monkeypatch):
    """A Mac whose Metal device exists but whose MLX can't load mlx.metallib."""

    def fail(mx, device):
        raise RuntimeError(MLX_METALLIB_ERROR)

    monkeypatch.setattr(selfcheck, "_metal_available", lambda mx: True)
    monkeypatch.setattr(selfcheck, "_probe", fail)


def test_the_check_runs_a_real_operation_on_the_default_device():
    import mlx.core as mx

    report = run_self_check(require_gpu=False)
    assert report.mlx_version == mx.__version__
    assert report.device == mx.default_device().type.name
    assert report.metal == mx.metal.is_available()


def test_a_wrong_result_fails_the_check(monkeypatch):
    monkeypatch.setattr(selfcheck, "_probe", lambda mx, device: 11.0)
    with pytest.raises(SelfCheckError, match="gave 11.0 instead of 12"):
        run_self_check(require_gpu=False)


def test_an_unloadable_metallib_says_what_failed_and_what_to_do(broken_metallib):
    with pytest.raises(SelfCheckError) as caught:
        run_self_check(require_gpu=True)
    message = str(caught.value)
    assert "could not load its Metal library (mlx.metallib)" in message  # what failed
    assert "Download the app again" in message  # what to do
    assert f"needs {selfcheck.MIN_MACOS} or later" in message
    assert MLX_METALLIB_ERROR in message  # MLX's own words, for a bug report


def test_a_metallib_failure_while_importing_mlx_gets_the_same_advice(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def failing_import(name, *args, **kwargs):
        if name == "mlx.core":
            raise RuntimeError(MLX_METALLIB_ERROR)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", failing_import)
    with pytest.raises(SelfCheckError, match=r"could not load its Metal library \(mlx.metallib\)"):
        run_self_check(require_gpu=True)


def test_no_metal_device_names_the_requirements(monkeypatch):
    monkeypatch.setattr(selfcheck, "_metal_available", lambda mx: False)
    with pytest.raises(SelfCheckError, match="finds no Metal device.*Apple silicon"):
        run_self_check(require_gpu=True)


def test_cli_self_check_prints_where_it_ran(capsys):
    import mlx.core as mx

    assert cli_main(["self-check", "--any-device", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["device"] == mx.default_device().type.name
    assert report["mlx"] == mx.__version__


def test_cli_self_check_fails_in_one_line_when_the_metallib_cannot_load(broken_metallib, capsys):
    assert cli_main(["self-check", "--require-gpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qwen-desk: Qwen Desk can\u2019t use the GPU")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_worker_checks_first_and_then_refuses_loads_and_chats_with_the_message(qtbot, broken_metallib):
    from app.worker.worker import WorkerClient
    from mlx_backend.events import ChatMessage, ChatRequest

    loaded = []
    client = WorkerClient(
        engine_loader=lambda path, progress: loaded.append(path),
        self_check=lambda: run_self_check(require_gpu=True),
    )
    try:
        with qtbot.waitSignal(client.selfCheckFailed, timeout=5000) as checked:
            pass
        message = checked.args[0]
        assert "mlx.metallib" in message
        with qtbot.waitSignal(client.modelLoadFailed, timeout=5000) as failed:
            client.load_model("some-model")
        assert failed.args == [message]
        assert loaded == []  # the loader never ran: no first answer that would crash or hang
        assert client.model_info is None and client.loading == ""

        handle = client.submit(_chat_job(ChatRequest(messages=[ChatMessage("user", "hi")])))
        with qtbot.waitSignal(handle.failed, timeout=5000) as job_failed:
            pass
        assert job_failed.args == [message]
    finally:
        assert client.shutdown(5000)


def test_a_passing_check_lets_the_model_load(qtbot):
    from app.worker.worker import WorkerClient

    checks = []
    client = WorkerClient(
        engine_loader=lambda path, progress: object(),
        self_check=lambda: checks.append(run_self_check(require_gpu=False)),
    )
    try:
        with qtbot.waitSignal(client.modelLoaded, timeout=5000):
            client.load_model("some-model")
        assert len(checks) == 1 and checks[0].mlx_version
        qtbot.waitUntil(lambda: not client.is_busy(), timeout=5000)  # the check left nothing pending
    finally:
        assert client.shutdown(5000)


def _chat_job(request):
    from app.worker.worker import chat_job

    return chat_job(request)


# The real app start (run_gui) in a child process, as on a Mac whose bundle lost its metallib:
# after QApplication.exec() returns, Qt stops delivering cross-thread events in that process.
_START_WITH_BROKEN_METAL = """
import json, sys
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication, QMessageBox
import app.worker.worker as worker
from mlx_backend import selfcheck

def fail(mx, device):
    raise RuntimeError(%r)

selfcheck._metal_available = lambda mx: True
selfcheck._probe = fail
worker.platform_self_check = lambda: worker._default_self_check  # the macOS check
seen = {}

def inspect_then_quit():
    boxes = [w for w in QApplication.topLevelWidgets() if isinstance(w, QMessageBox) and w.isVisible()]
    seen["boxes"] = [(box.objectName(), box.windowTitle() or box.text(), box.text()) for box in boxes]
    QApplication.quit()

app = QApplication(sys.argv[:1])
QTimer.singleShot(1500, inspect_then_quit)
from app.gui import run_gui
seen["exit_code"] = run_gui([])
print("RESULT " + json.dumps(seen))
""" % MLX_METALLIB_ERROR


def test_the_window_shows_the_failure_at_startup(tmp_path: Path):
    env = {
        **os.environ,
        "QWEN_DESK_DATA_DIR": str(tmp_path / "data"),
        "HF_HUB_CACHE": str(tmp_path / "hf-cache"),
        "QT_QPA_PLATFORM": "offscreen",
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-c", _START_WITH_BROKEN_METAL], cwd=REPO_ROOT, env=env, capture_output=True,
        text=True, timeout=120,
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1][len("RESULT "):])
    assert result["exit_code"] == 0
    failures = [box for box in result["boxes"] if box[0] == "selfCheckFailure"]
    assert len(failures) == 1, result["boxes"]
    assert "could not load its Metal library (mlx.metallib)" in failures[0][2]
    assert "Download the app again" in failures[0][2]
