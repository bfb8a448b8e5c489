"""The app's group controller with a stand-in command line: a single-process ``qwen-desk serve``
where ``--hosts`` would start a group, and a command that fails as a group would."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from app.remote.controller import GroupController, GroupSpec
from app.remote.hosts import read_host_file
from mlx_backend.errors import QwenDeskError
from mlx_backend.events import AnswerDelta, ChatMessage, ChatRequest, Finished
from mlx_backend.remote.process import serve_command
from tests.support.checkpoints import write_random_checkpoint

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("group") / "tiny-group", max_position_embeddings=512)


def single_process(spec, port, key):
    return serve_command("--model", spec.model, "--host", "127.0.0.1", "--port", str(port), "--api-key", key)


def test_a_started_group_is_ready_chats_and_stops(qtbot, model_dir):
    controller = GroupController(command_builder=single_process, env=ENV)
    spec = GroupSpec(str(model_dir), "hosts.json", ("mac-a", "mac-b"))
    lines = []
    controller.progress.connect(lines.append)
    with qtbot.waitSignal(controller.ready, timeout=120_000) as ready:
        controller.start(spec)
    assert lines[0] == "Starting the group on 2 Macs\u2026"
    engine = ready.args[0]
    assert controller.state == "running" and controller.name == "tiny-group on 2 Macs"
    assert engine.info.where == "2 Macs" and engine.info.context_length == 512
    events = list(engine.stream(ChatRequest(messages=(ChatMessage("user", "hi"),), enable_thinking=False, max_tokens=4)))
    assert isinstance(events[-1], Finished) and events[-1].reason in ("stop", "length")
    process = controller.process
    assert controller.stop(5) and not process.running() and controller.state == "idle"


def test_a_group_that_fails_to_start_says_why(qtbot):
    script = "import sys; print('rank 1 (mac-b) could not be reached over ssh', file=sys.stderr); sys.exit(1)"
    controller = GroupController(command_builder=lambda *_: [sys.executable, "-c", script])
    with qtbot.waitSignal(controller.failed, timeout=30_000) as failed:
        controller.start(GroupSpec("m", "hosts.json", ("mac-a", "mac-b")))
    assert "did not start" in failed.args[0] and "rank 1 (mac-b) could not be reached over ssh" in failed.args[0]
    assert controller.state == "idle"


def test_a_host_file_lists_its_macs(tmp_path):
    path = tmp_path / "hosts.json"
    path.write_text('[{"ssh": "mac-a.local", "ips": ["10.0.0.1"]}, {"ssh": "mac-b.local", "ips": ["10.0.0.2"]}]')
    assert read_host_file(path).hosts == ("mac-a.local", "mac-b.local")
    path.write_text("{}")
    with pytest.raises(QwenDeskError, match="lists no hosts"):
        read_host_file(path)
