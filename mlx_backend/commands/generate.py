"""``qwen-desk generate``: answer one prompt from the command line, streaming as it goes.

The answer goes to stdout and the model's thinking to stderr (dimmed on a terminal, framed by
``[thinking]`` lines otherwise), so ``qwen-desk generate ... > answer.txt`` keeps just the
answer. ``--json`` prints a single JSON line with the text and the timing figures instead.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import Iterable, Iterator, TextIO

from mlx_backend import AnswerDelta, ChatMessage, ChatRequest, Event, Failed, Finished, ThinkingDelta, ToolCall
from mlx_backend.errors import RequestError
from mlx_backend.tools.loop import DEFAULT_MAX_STEPS, ToolCallFinished, ToolCallStarted, ToolLoopLimit
from mlx_backend.generation.sampling import preset_for
from mlx_backend.text.thinking import resolve_thinking

DIM, RESET = "\x1b[2m", "\x1b[0m"


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "generate",
        help="answer a prompt with a local Qwen3 model",
        description="Answer one prompt with a local Qwen3 model, streaming the text.",
    )
    parser.add_argument("--model", required=True, help="model folder or Hugging Face repo id")
    parser.add_argument("--prompt", required=True, help="the user message ('-' reads stdin)")
    parser.add_argument("--system", help="an optional system message")
    parser.add_argument("--max-tokens", type=int, default=1024, help="answer length limit (default 1024)")
    parser.add_argument(
        "--temp", type=float, help="sampling temperature (default: Qwen3's preset; 0 = greedy)"
    )
    parser.add_argument("--top-p", type=float, help="nucleus sampling threshold (default: preset)")
    parser.add_argument("--top-k", type=int, help="sample among the k most likely tokens (default: preset)")
    parser.add_argument("--seed", type=int, help="random seed for reproducible sampling")
    parser.add_argument(
        "--no-think", action="store_true", help="answer without thinking first (hybrid models)"
    )
    parser.add_argument(
        "--think", action="store_true", help="think first even where the model's default is not to"
    )
    parser.add_argument(
        "--reasoning-effort",
        metavar="LEVEL",
        help="how hard the model thinks, for models whose template takes it (Qwen3.8: xhigh, medium, low)",
    )
    parser.add_argument(
        "--preserve-thinking",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="keep earlier turns' reasoning in the prompt (templates that offer it, e.g. Qwen3.6)",
    )
    parser.add_argument("--kv-bits", type=int, choices=(4, 8), help="quantize the KV cache")
    parser.add_argument("--yarn", type=float, metavar="FACTOR", help="extend the context with YaRN")
    parser.add_argument(
        "--stop", action="append", default=[], help="stop when this text appears (repeatable)"
    )
    parser.add_argument(
        "--draft-model",
        metavar="M",
        help="speculative decoding with this small model of the same tokenizer (e.g. Qwen3-0.6B)",
    )
    parser.add_argument(
        "--num-draft",
        type=int,
        metavar="N",
        help="tokens the draft model guesses per step (default: chosen by the acceptance)",
    )
    parser.add_argument(
        "--prompt-lookup",
        choices=("auto", "on", "off"),
        default="auto",
        help="draft from n-grams of the prompt (default auto: long prompts, while it pays)",
    )
    parser.add_argument(
        "--no-mtp",
        action="store_true",
        help="don't draft with the model's multi-token-prediction layer (Qwen3.5 family, Qwen3-Next)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON line with text and stats")
    tools = parser.add_argument_group("tools (MCP)")
    tools.add_argument("--mcp-config", metavar="FILE", help="offer the tools of the MCP servers in this mcpServers JSON file")
    tools.add_argument(
        "--allow-tools", metavar="NAMES", action="append", default=[],
        help="comma-separated tools that may run without asking, by name or as server/tool (others are denied); repeatable",
    )
    tools.add_argument("--max-tool-steps", type=int, default=DEFAULT_MAX_STEPS, help=f"most model steps with tool calls (default {DEFAULT_MAX_STEPS})")
    tools.add_argument("--tool-timeout", type=float, default=120.0, help="seconds one tool call may take (default 120)")
    parser.set_defaults(run=run)
    return parser


def build_request(
    args: argparse.Namespace,
    prompt: str,
    thinking_mode: str,
    *,
    soft_switches: bool = True,
    thinks_by_default: bool = True,
) -> ChatRequest:
    messages: list[ChatMessage] = []
    if args.system:
        messages.append(ChatMessage("system", args.system))
    messages.append(ChatMessage("user", prompt))
    enable_thinking = False if args.no_think else (True if args.think else None)
    sampling = None
    overrides = {
        name: value
        for name, value in (("temperature", args.temp), ("top_p", args.top_p), ("top_k", args.top_k))
        if value is not None
    }
    if overrides:
        # Options not given keep the preset of the mode this prompt will run in.
        thinking = resolve_thinking(
            prompt, enable_thinking, thinking_mode, soft_switches=soft_switches, default=thinks_by_default
        )
        sampling = replace(preset_for(thinking), **overrides)
    return ChatRequest(
        messages=tuple(messages),
        enable_thinking=enable_thinking,
        sampling=sampling,
        max_tokens=args.max_tokens,
        stop=tuple(args.stop),
        seed=args.seed,
        kv_bits=args.kv_bits,
        yarn_factor=args.yarn,
        reasoning_effort=args.reasoning_effort,
        preserve_thinking=args.preserve_thinking,
        prompt_lookup=getattr(args, "prompt_lookup", "auto"),
    )


def run(args: argparse.Namespace) -> int:
    from mlx_backend import Engine  # MLX is imported only when a command needs it

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    draft = getattr(args, "draft_model", None)
    num_draft = getattr(args, "num_draft", None)
    if num_draft is not None and draft is None:
        raise RequestError("--num-draft needs --draft-model.")
    if args.allow_tools and not args.mcp_config:
        raise RequestError("--allow-tools needs --mcp-config FILE: the servers the tools come from.")
    # --no-mtp: the MTP layer is not even loaded.
    engine = Engine.load(args.model, draft=draft, num_draft_tokens=num_draft, mtp=not getattr(args, "no_mtp", False))
    tokenizer = engine.tokenizer
    request = build_request(
        args,
        prompt,
        tokenizer.thinking_mode,
        soft_switches=tokenizer.soft_switches,
        thinks_by_default=tokenizer.thinks_by_default,
    )
    if args.mcp_config:
        events = _tool_loop_events(args, engine, request)
    else:
        events = engine.stream(request)  # raises RequestError for a bad request: cli.py prints it
    if args.json:
        return _print_json(events)
    return _print_stream(events, sys.stdout, sys.stderr)


def _allowed_tools(values: list[str]) -> set[str]:
    return {name.strip() for value in values for name in value.split(",") if name.strip()}


def _tool_loop_events(args: argparse.Namespace, engine, request: ChatRequest) -> Iterator[object]:
    """The tool loop over the MCP servers of ``--mcp-config``; only ``--allow-tools`` run."""
    from mlx_backend.tools.loop import run_tool_loop
    from mlx_backend.tools.mcp import McpHub
    from mlx_backend.tools.mcp.config import load_config
    from mlx_backend.tools.mcp.runner import McpToolRunner
    from mlx_backend.tools.mcp.schema import openai_tools

    allowed = _allowed_tools(args.allow_tools)
    with McpHub(load_config(args.mcp_config, missing_ok=False)) as hub:
        schemas, names = openai_tools(hub.tools())
        for server in hub.config.enabled():
            if (error := hub.error(server.name)) is not None:
                print(f"qwen-desk: MCP server {server.name!r} is not available: {error}", file=sys.stderr)
        runner = McpToolRunner(
            # The name the model calls it by (server__tool where two servers share a name), or
            # server/tool: a plain name never approves another server's tool of that name.
            hub, names, lambda call, server, tool: call.name in allowed or f"{server}/{tool}" in allowed,
            timeout_s=args.tool_timeout,
        )
        # One conversation id: each step reuses the previous step's prompt cache.
        looped = replace(request, tools=tuple(schemas), conversation_id="qwen-desk-generate")
        yield from run_tool_loop(engine, looped, runner, max_steps=args.max_tool_steps)


def _print_stream(events: Iterable[Event], out: TextIO, err: TextIO) -> int:
    dim = err.isatty()
    code = 1  # until a step finishes
    in_thought = False
    wrote_answer = False
    for event in events:
        if isinstance(event, ThinkingDelta):
            if not in_thought:
                err.write(DIM if dim else "[thinking]\n")
                in_thought = True
            err.write(event.text)
            err.flush()
        elif isinstance(event, AnswerDelta):
            if in_thought:
                err.write(RESET if dim else "\n[/thinking]\n")
                err.flush()
                in_thought = False
            out.write(event.text)
            out.flush()
            wrote_answer = True
        elif isinstance(event, Failed):
            err.write(f"\nqwen-desk: {event.message}\n")
        elif isinstance(event, ToolCallStarted):
            err.write(f"[tool] {event.call.name}({json.dumps(event.call.arguments, ensure_ascii=False)})\n")
        elif isinstance(event, ToolCallFinished):
            err.write(f"[tool] {_outcome_line(event)}\n")
        elif isinstance(event, ToolLoopLimit):
            err.write(f"qwen-desk: stopped after {event.max_steps} tool steps (--max-tool-steps)\n")
            code = 1
        elif isinstance(event, Finished):
            if in_thought:
                err.write(RESET if dim else "\n[/thinking]\n")
                in_thought = False
            if wrote_answer:
                out.write("\n")
                wrote_answer = False
            out.flush()
            s = event.stats
            err.write(
                f"Prompt: {s.prompt_tokens} tokens ({s.cached_tokens} cached), "
                f"{s.prompt_tps:.1f} tokens/s, first token after {s.ttft_s:.2f} s\n"
                f"Generation: {s.generation_tokens} tokens, {s.generation_tps:.1f} tokens/s "
                f"({event.reason}); peak memory {s.peak_memory_gb:.2f} GB\n"
            )
            if s.speculative:
                err.write(_speculation_line(s) + "\n")
            # A tool loop has a Finished per model step: the last one decides.
            code = 1 if event.reason == "error" else 0
    return code


def _outcome_line(event: ToolCallFinished) -> str:
    outcome = event.outcome
    if outcome.denied:
        return f"{event.call.name if isinstance(event.call, ToolCall) else 'call'} denied (not in --allow-tools)"
    text = outcome.text if len(outcome.text) <= 300 else outcome.text[:300] + "\u2026"
    label = "error" if outcome.is_error else f"{outcome.duration_s:.2f} s"
    return f"\u2192 ({label}) {text}"


def _print_json(events: Iterable[Event]) -> int:
    """One JSON line at the end: the text, the timing of the (last) model step, and, in a tool
    loop, every call with its result."""
    answer: list[str] = []
    thinking: list[str] = []
    error: str | None = None
    finished: Finished | None = None
    calls: list[dict] = []
    steps = 0
    limited = False
    for event in events:
        if isinstance(event, ThinkingDelta):
            thinking.append(event.text)
        elif isinstance(event, AnswerDelta):
            answer.append(event.text)
        elif isinstance(event, Failed):
            error = event.message
        elif isinstance(event, ToolCallFinished):
            outcome = event.outcome
            calls.append({
                "name": event.call.name if isinstance(event.call, ToolCall) else None,
                "arguments": event.call.arguments if isinstance(event.call, ToolCall) else None,
                "raw": event.call.raw,
                "result": outcome.text,
                "is_error": outcome.is_error,
                "denied": outcome.denied,
                "server": outcome.server,
                "duration_s": round(outcome.duration_s, 4),
            })
        elif isinstance(event, ToolLoopLimit):
            limited = True
        elif isinstance(event, Finished):
            finished = event
            steps += 1
    if finished is None:
        return 1
    s = finished.stats
    record = {
        "text": "".join(answer),
        "thinking": "".join(thinking),
        "finish_reason": finished.reason,
        "prompt_tokens": s.prompt_tokens,
        "cached_tokens": s.cached_tokens,
        "generation_tokens": s.generation_tokens,
        "ttft_s": round(s.ttft_s, 4),
        "prompt_tps": round(s.prompt_tps, 2),
        "generation_tps": round(s.generation_tps, 2),
        "peak_memory_gb": round(s.peak_memory_gb, 4),
        "speculative": s.speculative,
        "drafted_tokens": s.drafted_tokens,
        "accepted_tokens": s.accepted_tokens,
        "acceptance_rate": None if s.acceptance_rate is None else round(s.acceptance_rate, 4),
        "speculative_speedup": None if s.speculative_speedup is None else round(s.speculative_speedup, 3),
        "speculative_fell_back": s.speculative_fell_back,
    }
    if calls or steps > 1:
        record.update(tool_calls=calls, steps=steps, step_limit_reached=limited)
    if error:
        record["error"] = error
    print(json.dumps(record, ensure_ascii=False), flush=True)
    if error:
        print(f"qwen-desk: {error}", file=sys.stderr)
    return 1 if finished.reason == "error" or limited else 0


def _speculation_line(s) -> str:
    """Speculative decoding in a line: what drafted, how much was kept, the speed it gained."""
    rate = f"{s.acceptance_rate:.0%}" if s.acceptance_rate is not None else "n/a"
    line = f"Speculative ({s.speculative}): {s.accepted_tokens}/{s.drafted_tokens} drafted tokens accepted ({rate})"
    if s.speculative_speedup is not None:
        line += f", {s.speculative_speedup:.2f}x plain decoding"
    if s.speculative_fell_back:
        line += "; slower than plain here, so plain decoding took over"
    return line
