"""A rank that dies, hangs or never answers ends the group with one clear line on every other
rank within the timeout, and rank 0's clients get an error answer instead of waiting forever."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from mlx_backend.distributed.watchdog import RANK_LOST_EXIT, Watchdog, is_lost_peer, other_ranks
from tests.support.group_server import free_ports, serve_group
from tests.support.launch import REPO, RANK_SCRIPTS

openai = pytest.importorskip("openai")

# Short for a test, long enough for 3 ranks sharing a busy CPU's first request.
TIMEOUT_S = 10


def test_the_message_names_the_ranks_it_can_be():
    assert other_ranks(0, 2) == "rank 1 of 2"
    assert other_ranks(1, 3) == "rank 0 or 2 of 3"
    assert other_ranks(3, 4) == "rank 0, 1 or 2 of 4"
    assert is_lost_peer(RuntimeError("[ring] connection to a peer was lost"))
    assert not is_lost_peer("Generation failed: out of memory")


def test_a_guard_that_outlives_its_timeout_ends_the_process_after_the_hooks():
    exits, heard = [], []
    out = io.StringIO()
    watchdog = Watchdog(0, 2, 0.3, exit=exits.append, stream=out)
    watchdog.on_failure(heard.append)
    with watchdog.guard():
        time.sleep(0.05)  # in time: nothing happens
    time.sleep(0.5)
    assert exits == [] and heard == []
    started = time.monotonic()
    def hang() -> None:
        with watchdog.guard():
            time.sleep(30)  # a collective that never returns

    threading.Thread(target=hang, daemon=True).start()
    deadline = time.monotonic() + 5
    while not exits and time.monotonic() < deadline:
        time.sleep(0.05)
    assert exits == [RANK_LOST_EXIT]
    assert 0.3 <= time.monotonic() - started < 3
    assert heard and "rank 1 of 2 stopped answering (no reply for 0.3 s)" in heard[0]
    assert out.getvalue().startswith("qwen-desk rank 0: rank 1 of 2 stopped answering")


def _stream_in_background(url: str) -> dict:
    result: dict = {"chunks": 0, "finish": None, "error": None}

    def run() -> None:
        client = openai.OpenAI(base_url=f"{url}/v1", api_key="local", max_retries=0, timeout=120)
        try:
            stream = client.chat.completions.create(
                model="model", messages=[{"role": "user", "content": "Tell me a long story."}],
                max_tokens=3000, temperature=0, stream=True,
            )
            for chunk in stream:
                result["chunks"] += 1
                if chunk.choices and chunk.choices[0].finish_reason:
                    result["finish"] = chunk.choices[0].finish_reason
        except Exception as error:  # noqa: BLE001 - what the client saw is the point
            result["error"] = f"{type(error).__name__}: {error}"
        result["done"] = True

    threading.Thread(target=run, daemon=True).start()
    return result


@pytest.fixture(scope="module")
def small_model(tmp_path_factory):
    from tests.support.checkpoints import write_random_checkpoint

    folder = tmp_path_factory.mktemp("faults") / "model"
    # Three layers: two and three ranks each get whole layers (the group splits them by default).
    write_random_checkpoint(folder, tokenizer="qwen3", num_hidden_layers=3)
    return folder


@pytest.mark.parametrize("ranks, sig", [(2, signal.SIGKILL), (3, signal.SIGSTOP)], ids=["killed", "stopped"])
def test_a_follower_that_dies_or_hangs_stops_the_group_with_a_clear_error(small_model, ranks, sig):
    group = serve_group(ranks, small_model, "--rank-timeout", str(TIMEOUT_S))
    try:
        url = group.url()
        answer = _stream_in_background(url)
        group.wait_for(lambda: answer["chunks"] > 5 or answer.get("done"), 60, "the answer to start")
        assert answer["chunks"] > 5 and not answer.get("done"), (answer, group.text()[-4000:])
        victim = ranks - 1
        os.kill(group.pids()[victim], sig)
        hit = time.monotonic()
        others = [rank for rank in range(ranks) if rank != victim]

        def reported():
            lines = [line for line in group.err if line.startswith("qwen-desk rank ")]
            ranks_seen = {int(line.split()[2].rstrip(":")) for line in lines}
            return lines if set(others) <= ranks_seen else None

        lines = group.wait_for(reported, TIMEOUT_S + 30, "every other rank's error")
        assert time.monotonic() - hit < TIMEOUT_S + 30
        for line in lines:
            assert ("stopped answering" in line or "is gone" in line), line
            assert "the group is stopping; start it again or load a smaller model" in line
        if sig == signal.SIGSTOP:
            assert any(f"no reply for {TIMEOUT_S} s" in line for line in lines)
        # Rank 0's client got an error, not a hang nor a normal end.
        group.wait_for(lambda: answer.get("done"), 30, "the client's end")
        assert answer["finish"] != "length"
        assert answer["error"] is not None or answer["finish"] is None
        group.wait_for(lambda: f"Node with rank 0 exited with code {RANK_LOST_EXIT}" in group.text() or None, 30, "rank 0's exit")
    finally:
        group.close()


def test_a_host_that_never_answers_ends_the_start_in_bounded_time(tmp_path):
    port = free_ports(2)
    hostfile = tmp_path / "ring.json"
    hostfile.write_text(json.dumps([[f"127.0.0.1:{port}"], [f"127.0.0.1:{port + 1}"]]))
    environment = {**os.environ, "MLX_RANK": "0", "MLX_HOSTFILE": str(hostfile), "PYTHONPATH": str(REPO)}
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, str(RANK_SCRIPTS / "serve_rank.py"), "--model", str(tmp_path / "unused"),
         "--port", "0", "--start-timeout", "3"],
        capture_output=True, text=True, env=environment, timeout=60, cwd=REPO,
    )
    assert done.returncode == -signal.SIGKILL, done.stderr  # ended by its start deadline
    assert time.monotonic() - started < 30
    assert "qwen-desk rank 0: rank 1 of 2 could not be reached" in done.stderr
    assert "(no reply for 3 s)" in done.stderr
