"""``qwen-desk generate --mcp-config FILE --allow-tools NAMES``: the tool loop headless, with a
real MCP server (written with the SDK) and a model whose replies are scripted."""

from __future__ import annotations

import json

import pytest

from mlx_backend import Engine
from mlx_backend.commands import cli
from mlx_backend.loading.loader import load
from tests.support.checkpoints import write_random_checkpoint
from tests.support.mcp_servers import stdio_entry
from tests.support.scripted_model import ScriptedModel

CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 40}}\n</tool_call>'


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    return load(write_random_checkpoint(tmp_path_factory.mktemp("cli-tools"), tokenizer="qwen3", max_position_embeddings=4096))


@pytest.fixture
def scripted(loaded, monkeypatch):
    """Engine.load gives an engine whose model calls add(2, 40) and then answers."""
    model, tokenizer = loaded
    monkeypatch.setattr(Engine, "load", classmethod(lambda cls, *a, **k: cls(ScriptedModel(model, tokenizer, [CALL, "It is 42."]), tokenizer)))


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "mcp.json"
    path.write_text(json.dumps({"mcpServers": {"box": stdio_entry()}}), encoding="utf-8")
    return path


def generate(capsys, *extra: str) -> tuple[int, dict, str]:
    code = cli.main(["generate", "--model", "scripted", "--prompt", "What is 2 + 40?", "--no-think", "--json", *extra])
    out, err = capsys.readouterr()
    return code, json.loads(out.strip().splitlines()[-1]) if out.strip() else {}, err


def test_an_allowed_tool_runs_and_the_answer_uses_its_result(scripted, config, capsys):
    code, record, _ = generate(capsys, "--mcp-config", str(config), "--allow-tools", "add,echo")
    assert code == 0
    [call] = record["tool_calls"]
    assert call["name"] == "add" and call["arguments"] == {"a": 2, "b": 40}
    assert call["result"] == "42" and call["server"] == "box" and not call["denied"]
    assert record["text"] == "It is 42." and record["steps"] == 2
    assert record["cached_tokens"] > 0  # the second step reused the first's prompt cache


def test_a_tool_not_allowed_is_denied_and_the_model_is_told(scripted, config, capsys):
    code, record, _ = generate(capsys, "--mcp-config", str(config))
    [call] = record["tool_calls"]
    assert call["denied"] and "denied" in call["result"] and code == 0


def test_the_stream_shows_each_call_and_its_result_on_stderr(scripted, config, capsys):
    code = cli.main(["generate", "--model", "scripted", "--prompt", "add", "--no-think", "--mcp-config", str(config), "--allow-tools", "add"])
    out, err = capsys.readouterr()
    assert code == 0 and out.strip() == "It is 42."
    assert '[tool] add({"a": 2, "b": 40})' in err and "[tool] \u2192" in err and "42" in err


def test_a_broken_config_is_one_clear_line(scripted, tmp_path, capsys):
    bad = tmp_path / "mcp.json"
    bad.write_text('{"mcpServers": {"box": {"command": "x",}}}', encoding="utf-8")
    code = cli.main(["generate", "--model", "scripted", "--prompt", "hi", "--mcp-config", str(bad)])
    _, err = capsys.readouterr()
    assert code == 2 and "line 1" in err and "Traceback" not in err


def test_allow_tools_without_a_config_is_refused(scripted, capsys):
    code = cli.main(["generate", "--model", "scripted", "--prompt", "hi", "--allow-tools", "add"])
    assert code == 2 and "--mcp-config" in capsys.readouterr().err
