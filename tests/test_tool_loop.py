"""The tool loop on a real engine whose model's replies are scripted: calls in both formats run
through a runner, results go back as tool messages, the model continues from the prompt cache;
denied and malformed calls are reported to the model; the step limit and Stop end the loop. The
MCP runner is exercised against a real MCP server written with the SDK."""

from __future__ import annotations

import json
import threading

import pytest

from mlx_backend import ChatMessage, ChatRequest, Engine, Finished
from mlx_backend.events import AnswerDelta, MalformedToolCall, SamplingParams, ToolCall
from mlx_backend.loading.loader import load
from mlx_backend.tools.loop import ToolCallFinished, ToolCallStarted, ToolLoopLimit, ToolOutcome, denied, run_tool_loop
from mlx_backend.tools.mcp import McpHub
from mlx_backend.tools.mcp.config import parse_config
from mlx_backend.tools.mcp.runner import McpToolRunner
from mlx_backend.tools.mcp.schema import openai_tools
from tests.support.mcp_servers import stdio_entry
from tests.support.scripted_model import ScriptedModel

ARGMAX = SamplingParams(temperature=0.0, top_p=1.0, top_k=0)
ADD = {"type": "function", "function": {"name": "add", "description": "Add two integers.", "parameters": {
    "type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}}, "required": ["a", "b"]}}}
JSON_CALL = '<tool_call>\n{"name": "add", "arguments": {"a": 2, "b": 3}}\n</tool_call>'
XML_CALL = "<tool_call>\n<function=add>\n<parameter=a>\n2\n</parameter>\n<parameter=b>\n3\n</parameter>\n</function>\n</tool_call>"


class Adder:
    """A runner that adds, or refuses when told to; records what it was asked."""

    def __init__(self, allow: bool = True, on_run=None) -> None:
        self.allow = allow
        self.calls: list[ToolCall] = []
        self.on_run = on_run

    def run(self, call, cancel):
        self.calls.append(call)
        if self.on_run:
            self.on_run()
        if not self.allow:
            return denied(call)
        return ToolOutcome(text=str(call.arguments["a"] + call.arguments["b"]), tool=call.name)


@pytest.fixture(scope="module")
def qwen3(tmp_path_factory):
    from tests.support.checkpoints import write_random_checkpoint

    return load(write_random_checkpoint(tmp_path_factory.mktemp("loop-qwen3"), tokenizer="qwen3", max_position_embeddings=4096))


@pytest.fixture(scope="module")
def qwen35(tmp_path_factory):
    from tests.support.hybrid_checkpoints import write_hybrid_checkpoint
    from tests.support.paths import SHARED_FIXTURES

    if not (SHARED_FIXTURES / "qwen3.5-family").is_dir():
        pytest.skip("the shared Qwen3.5 fixtures are missing")
    return load(write_hybrid_checkpoint(tmp_path_factory.mktemp("loop-qwen35"), kind="dense", tokenizer=True, release="qwen3.5"))


def engine_with(loaded, replies) -> tuple[Engine, ScriptedModel]:
    model, tokenizer = loaded
    scripted = ScriptedModel(model, tokenizer, replies)
    return Engine(scripted, tokenizer, name="scripted"), scripted


def ask(text: str = "What is 2 + 3?", thinking: bool = False) -> ChatRequest:
    return ChatRequest(messages=(ChatMessage("user", text),), conversation_id="loop", tools=(ADD,),
                       sampling=ARGMAX, max_tokens=80, enable_thinking=thinking)


@pytest.mark.parametrize("form", ["qwen3-json", "qwen3.5-xml"])
def test_a_call_runs_its_result_goes_back_and_the_model_continues_from_the_cache(form, qwen3, request):
    loaded, call = (qwen3, JSON_CALL) if form == "qwen3-json" else (request.getfixturevalue("qwen35"), XML_CALL)
    engine, scripted = engine_with(loaded, [call, "The sum is 5."])
    runner = Adder()
    events = list(run_tool_loop(engine, ask(), runner))

    assert [c.arguments for c in runner.calls] == [{"a": 2, "b": 3}]
    started = [e for e in events if isinstance(e, ToolCallStarted)]
    finished_calls = [e for e in events if isinstance(e, ToolCallFinished)]
    assert len(started) == 1 and started[0].call.name == "add" and started[0].step == 0
    assert finished_calls[0].outcome.text == "5" and finished_calls[0].outcome.duration_s >= 0
    # Two model steps, each with its own Finished; the tool call never showed as answer text.
    steps = [e for e in events if isinstance(e, Finished)]
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    assert len(steps) == 2 and all(s.reason == "stop" for s in steps)
    assert answer == "The sum is 5." and "<tool_call>" not in answer
    # The second step's prompt carries the call and its result, and reused the first step's cache.
    tokenizer = loaded[1]
    second_prompt = tokenizer.decode(scripted.prompts[1])
    assert "<tool_response>\n5\n</tool_response>" in second_prompt
    assert steps[1].stats.cached_tokens > steps[0].stats.prompt_tokens // 2


def test_several_calls_in_one_reply_run_in_order(qwen3):
    two = JSON_CALL + '\n<tool_call>\n{"name": "add", "arguments": {"a": 10, "b": 1}}\n</tool_call>'
    engine, scripted = engine_with(qwen3, [two, "5 and 11."])
    runner = Adder()
    events = list(run_tool_loop(engine, ask(), runner))
    assert [c.arguments["a"] for c in runner.calls] == [2, 10]
    assert [e.index for e in events if isinstance(e, ToolCallFinished)] == [0, 1]
    prompt = qwen3[1].decode(scripted.prompts[1])
    assert prompt.index("<tool_response>\n5\n") < prompt.index("<tool_response>\n11\n")


def test_a_denied_call_is_reported_to_the_model_as_denied(qwen3):
    engine, scripted = engine_with(qwen3, [JSON_CALL, "I was not allowed to add."])
    events = list(run_tool_loop(engine, ask(), Adder(allow=False)))
    [done] = [e for e in events if isinstance(e, ToolCallFinished)]
    assert done.outcome.denied
    assert "The user denied this tool call." in qwen3[1].decode(scripted.prompts[1])


def test_a_malformed_call_is_not_run_and_its_error_goes_back(qwen3):
    engine, scripted = engine_with(qwen3, ['<tool_call>\n{"name": "add", "arguments": {"a": 2,}}\n</tool_call>', "Sorry."])
    runner = Adder()
    events = list(run_tool_loop(engine, ask(), runner))
    assert runner.calls == []
    [done] = [e for e in events if isinstance(e, ToolCallFinished)]
    assert isinstance(done.call, MalformedToolCall) and done.outcome.is_error
    second = qwen3[1].decode(scripted.prompts[1])
    assert "could not be read" in second and '"a": 2,}' in second  # the model sees what it wrote


def test_the_step_limit_ends_a_loop_that_keeps_calling(qwen3):
    engine, _ = engine_with(qwen3, [JSON_CALL] * 5)
    runner = Adder()
    events = list(run_tool_loop(engine, ask(), runner, max_steps=2))
    assert len(runner.calls) == 2
    assert isinstance(events[-1], ToolLoopLimit) and events[-1].max_steps == 2
    assert len([e for e in events if isinstance(e, Finished)]) == 3


def test_stop_during_a_call_ends_the_loop_at_once(qwen3):
    cancel = threading.Event()
    engine, scripted = engine_with(qwen3, [JSON_CALL, "never"])
    events = list(run_tool_loop(engine, ask(), Adder(on_run=cancel.set), cancel))
    assert isinstance(events[-1], ToolCallFinished)
    assert len(scripted.prompts) == 1  # no second step


def test_thinking_between_steps_goes_back_as_the_template_expects(qwen3):
    # Qwen3's template keeps the reasoning of assistant turns after the last user message.
    engine, scripted = engine_with(qwen3, ["<think>\nI should add.\n</think>\n\n" + JSON_CALL, "5."])
    list(run_tool_loop(engine, ask(thinking=True), Adder()))
    assert "I should add." in qwen3[1].decode(scripted.prompts[1])


@pytest.fixture
def hub():
    config = parse_config(json.dumps({"mcpServers": {"box": stdio_entry()}}))
    with McpHub(config, start_timeout_s=30) as hub:
        yield hub


def test_the_mcp_runner_asks_then_runs_the_tool_on_its_server(hub):
    schemas, names = openai_tools(hub.tools())
    assert "add" in [s["function"]["name"] for s in schemas]
    asked: list[tuple[str, str, dict]] = []

    def approve(call, server, tool):
        asked.append((server, tool, call.arguments))
        return tool != "echo"

    runner = McpToolRunner(hub, names, approve, timeout_s=20)
    cancel = threading.Event()
    outcome = runner.run(ToolCall("add", {"a": 2, "b": 40}, raw=""), cancel)
    assert outcome.text == "42" and not outcome.is_error and outcome.server == "box"
    refused = runner.run(ToolCall("echo", {"text": "hi"}, raw=""), cancel)
    assert refused.denied and asked[-1] == ("box", "echo", {"text": "hi"})
    failed = runner.run(ToolCall("fail", {"message": "disk full"}, raw=""), cancel)
    assert failed.is_error and "disk full" in failed.text
    unknown = runner.run(ToolCall("rm_rf", {}, raw=""), cancel)
    assert unknown.is_error and "does not exist" in unknown.text
    image = runner.run(ToolCall("pixel", {}, raw=""), cancel)
    assert image.images and image.images[0].mime_type == "image/png" and "image" in image.text
    crashed = runner.run(ToolCall("crash", {}, raw=""), cancel)
    assert crashed.is_error and crashed.text.startswith("Error:")
