"""``qwen-desk generate``: streamed text, thinking on stderr, --json, errors as one line."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from mlx_backend import AnswerDelta, ChatMessage, ChatRequest, Engine, Finished, SamplingParams, ThinkingDelta
from mlx_backend.commands import cli
from tests.support.checkpoints import write_random_checkpoint

PROMPT = "Write one sentence about the sea."
GREEDY = SamplingParams(temperature=0.0, top_p=1.0, top_k=0)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("cli-model"))


def engine_output(model_dir: Path, **fields) -> tuple[str, str, Finished]:
    """What the engine itself answers: the reference for the CLI's output."""
    engine = Engine.load(model_dir)
    request = ChatRequest(messages=(ChatMessage("user", PROMPT),), sampling=GREEDY, **fields)
    events = list(engine.stream(request))
    answer = "".join(e.text for e in events if isinstance(e, AnswerDelta))
    thinking = "".join(e.text for e in events if isinstance(e, ThinkingDelta))
    return answer, thinking, events[-1]


def test_json_line_has_text_and_stats(model_dir, capsys):
    code = cli.main(
        ["generate", "--model", str(model_dir), "--prompt", PROMPT, "--max-tokens", "7",
         "--temp", "0", "--top-p", "1", "--top-k", "0", "--json", "--seed", "3"]
    )
    assert code == 0
    out = capsys.readouterr().out.strip().splitlines()
    assert len(out) == 1
    record = json.loads(out[0])
    answer, thinking, done = engine_output(model_dir, max_tokens=7)
    assert record["text"] == answer and record["thinking"] == thinking
    assert record["finish_reason"] == done.reason
    assert record["prompt_tokens"] == done.stats.prompt_tokens
    assert record["generation_tokens"] == done.stats.generation_tokens
    for key in ("ttft_s", "prompt_tps", "generation_tps", "peak_memory_gb"):
        assert isinstance(record[key], float) and record[key] > 0, key


def test_plain_output_streams_the_answer_to_stdout_and_stats_to_stderr(model_dir, capsys):
    code = cli.main(
        ["generate", "--model", str(model_dir), "--prompt", PROMPT, "--max-tokens", "6",
         "--temp", "0", "--top-p", "1", "--top-k", "0", "--no-think"]
    )
    assert code == 0
    captured = capsys.readouterr()
    answer, _, done = engine_output(model_dir, max_tokens=6, enable_thinking=False)
    assert captured.out == answer + "\n"
    assert f"Prompt: {done.stats.prompt_tokens} tokens" in captured.err
    assert f"Generation: {done.stats.generation_tokens} tokens" in captured.err


def test_no_think_renders_the_closed_think_block(model_dir, capsys):
    from mlx_backend.commands.generate import build_request

    args = cli.build_parser().parse_args(
        ["generate", "--model", "x", "--prompt", "hi", "--no-think", "--temp", "0.3"]
    )
    request = build_request(args, "hi", "hybrid")
    assert request.enable_thinking is False
    # --temp replaces only the temperature of the non-thinking preset.
    assert request.sampling == SamplingParams(temperature=0.3, top_p=0.8, top_k=20)
    thinking = build_request(
        cli.build_parser().parse_args(["generate", "--model", "x", "--prompt", "hi", "--top-k", "5"]),
        "hi",
        "hybrid",
    )
    assert thinking.sampling == SamplingParams(temperature=0.6, top_p=0.95, top_k=5)
    defaults = build_request(
        cli.build_parser().parse_args(["generate", "--model", "x", "--prompt", "hi"]), "hi", "hybrid"
    )
    assert defaults.sampling is None  # the engine picks the preset


def test_thinking_goes_to_stderr_marked(tmp_path, capsys):
    folder = write_random_checkpoint(tmp_path / "thinking", tokenizer="qwen3-thinking-2507")
    code = cli.main(
        ["generate", "--model", str(folder), "--prompt", PROMPT, "--max-tokens", "5", "--temp", "0"]
    )
    assert code == 0
    captured = capsys.readouterr()
    _, thinking, _ = engine_output(folder, max_tokens=5)
    assert thinking  # a Thinking-2507 reply starts inside its thought
    assert captured.err.startswith("[thinking]\n" + thinking + "\n[/thinking]\n")
    assert captured.out == ""  # the random model never closes its thought: no answer


def test_bad_request_is_one_clear_line(model_dir, capsys):
    code = cli.main(["generate", "--model", str(model_dir), "--prompt", "hi", "--max-tokens", "0"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.strip() == "qwen-desk: max_tokens must be a positive whole number, not 0."


def test_missing_model_is_one_clear_line(tmp_path, capsys):
    code = cli.main(["generate", "--model", str(tmp_path / "nope"), "--prompt", "hi"])
    assert code == 2
    err = capsys.readouterr().err
    assert err.startswith("qwen-desk: ") and "nope" in err and "Traceback" not in err


def test_the_installed_command_runs_end_to_end(model_dir):
    result = subprocess.run(
        [sys.executable, "-m", "app.main", "generate", "--model", str(model_dir), "--prompt", "-",
         "--max-tokens", "4", "--temp", "0", "--json"],
        input=PROMPT,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=Path(__file__).resolve().parents[1],
    )
    assert result.returncode == 0, result.stderr
    record = json.loads(result.stdout)
    assert record["generation_tokens"] > 0 and record["prompt_tokens"] > 5


def test_the_benchmark_is_not_an_installed_subcommand(capsys):
    # bench/run.py needs a source checkout (tests/support): `make bench` runs it there.
    with pytest.raises(SystemExit) as exited:
        cli.main(["bench"])
    assert exited.value.code == 2
    assert "invalid choice: 'bench'" in capsys.readouterr().err


# ---------------------------------------------------------------- reasoning effort, preserve thinking


def test_reasoning_effort_and_preserve_thinking_flags_reach_the_request():
    from mlx_backend.commands.generate import build_request

    parse = cli.build_parser().parse_args
    request = build_request(
        parse(["generate", "--model", "x", "--prompt", "hi", "--reasoning-effort", "low", "--preserve-thinking"]),
        "hi",
        "hybrid",
    )
    assert (request.reasoning_effort, request.preserve_thinking) == ("low", True)
    off = build_request(parse(["generate", "--model", "x", "--prompt", "hi", "--no-preserve-thinking"]), "hi", "hybrid")
    assert (off.reasoning_effort, off.preserve_thinking) == (None, False)
    # Qwen3.5-family models ignore /no_think, so the thinking preset stays (with --top-k over it).
    qwen35 = build_request(parse(["generate", "--model", "x", "--prompt", "x", "--top-k", "5"]), "hi /no_think",
                           "hybrid", soft_switches=False)
    qwen3 = build_request(parse(["generate", "--model", "x", "--prompt", "x", "--top-k", "5"]), "hi /no_think",
                          "hybrid")
    assert qwen35.sampling.temperature == 0.6 and qwen3.sampling.temperature == 0.7


@pytest.fixture(scope="module")
def qwen38_dir(tmp_path_factory) -> Path:
    from tests.support.hybrid_checkpoints import hybrid_fixtures_available, write_hybrid_checkpoint

    if not hybrid_fixtures_available():
        pytest.skip("shared Qwen3.5-family fixtures missing")
    pytest.importorskip("torch")
    return write_hybrid_checkpoint(tmp_path_factory.mktemp("cli-qwen38"), release="qwen3.8")


def test_reasoning_effort_reaches_the_prompt_from_the_command_line(qwen38_dir, capsys):
    engine = Engine.load(qwen38_dir)
    info = engine.info
    assert info.reasoning_efforts == ("xhigh", "medium", "low") and info.can_preserve_thinking
    counts = {}
    for effort in info.reasoning_efforts:
        code = cli.main(["generate", "--model", str(qwen38_dir), "--prompt", PROMPT, "--max-tokens", "2",
                         "--temp", "0", "--reasoning-effort", effort, "--json"])
        assert code == 0
        record = json.loads(capsys.readouterr().out.strip())
        request = ChatRequest(messages=(ChatMessage("user", PROMPT),), reasoning_effort=effort)
        assert record["prompt_tokens"] == len(engine.prepare(request).prompt)
        counts[effort] = record["prompt_tokens"]
    assert len(set(counts.values())) == 3  # each effort renders its own instructions


def test_an_effort_the_model_does_not_take_is_one_clear_line(qwen38_dir, capsys):
    code = cli.main(["generate", "--model", str(qwen38_dir), "--prompt", "hi", "--reasoning-effort", "high"])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("qwen-desk: ") and "xhigh, medium, low" in err and "'high'" in err
    assert "\n" not in err
