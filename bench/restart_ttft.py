"""Time to first token when a long chat is reopened after a restart: from disk vs re-prefilled.

Each step runs in a fresh Python process (a real restart: nothing of the engine survives):

1. ``build``: load the model with a prompt-cache folder, answer a chat of ``--tokens`` prompt
   tokens, wait for its cache file, and write the conversation (with the reply) to a JSON file;
2. ``restore``: a new process loads the model with the same folder and times the chat's next
   turn: its prompt cache comes from disk, so only the new message is prefilled;
3. ``cold``: a new process loads the model without a cache folder and times the same turn: the
   whole chat is prefilled again.

``measure`` runs the three (restore and cold alternating, ``runs`` each) and returns medians.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

REPO_ROOT = Path(__file__).resolve().parents[1]
CONVERSATION = "bench-restart"
GREEDY = {"temperature": 0.0, "top_p": 1.0, "top_k": 0}
FILLER = (
    "The committee reviewed the quarterly figures for every regional office and noted that "
    "shipping delays, currency swings and a late harvest explained most of the variance. "
)


@dataclass(frozen=True)
class RestartResult:
    prompt_tokens: int
    restored_ttft_s: float
    cold_ttft_s: float
    restored_cached_tokens: int

    @property
    def speedup(self) -> float:
        return self.cold_ttft_s / self.restored_ttft_s


def _request(messages: list[dict], max_tokens: int, conversation: Optional[str]):
    from mlx_backend import ChatMessage, ChatRequest, SamplingParams

    return ChatRequest(
        messages=tuple(ChatMessage(m["role"], m["content"]) for m in messages),
        conversation_id=conversation,
        enable_thinking=False,
        sampling=SamplingParams(**GREEDY),
        max_tokens=max_tokens,
    )


def _timed(engine, request) -> dict:
    from mlx_backend import AnswerDelta, Finished, PrefillProgress

    start = time.perf_counter()
    first = None
    text = []
    stats = None
    for event in engine.stream(request):
        if first is None and (
            isinstance(event, AnswerDelta)
            or (isinstance(event, PrefillProgress) and event.done == event.total and event.eta_s == 0.0)
        ):
            first = time.perf_counter()  # the engine reports this as soon as the first token is sampled
        if isinstance(event, AnswerDelta):
            text.append(event.text)
        if isinstance(event, Finished):
            stats = event.stats
    assert first is not None and stats is not None, "no token was generated"
    return {
        "ttft_s": first - start,
        "prompt_tokens": stats.prompt_tokens,
        "cached_tokens": stats.cached_tokens,
        "reply": "".join(text),
    }


def child(args: argparse.Namespace) -> None:
    """One step, in this (fresh) process; prints a JSON line."""
    sys.path.insert(0, str(REPO_ROOT))
    from mlx_backend import Engine

    history = Path(args.history)
    if args.mode == "build":
        engine = Engine.load(args.folder, disk_cache_folder=args.cache)
        words = (FILLER * (args.tokens // 20 + 2)).split(" ")
        text = " ".join(words)
        while len(engine.tokenizer.encode(text)) > args.tokens:
            text = " ".join(text.split(" ")[: -20])
        messages = [{"role": "user", "content": text}]
        result = _timed(engine, _request(messages, 8, CONVERSATION))
        messages.append({"role": "assistant", "content": result["reply"]})
        engine.disk_cache.flush()
        messages.append({"role": "user", "content": "Sum that up in one line, please."})
        history.write_text(json.dumps(messages), encoding="utf-8")
    else:
        folder = args.cache if args.mode == "restore" else None
        engine = Engine.load(args.folder, disk_cache_folder=folder)
        messages = json.loads(history.read_text(encoding="utf-8"))
        result = _timed(engine, _request(messages, 1, CONVERSATION))
    result.pop("reply")
    print(json.dumps(result), flush=True)


def _run_child(mode: str, folder: Path, cache: Path, history: Path, tokens: int) -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))}
    command = [sys.executable, "-m", "bench.restart_ttft", "--child", mode, "--folder", str(folder),
               "--cache", str(cache), "--history", str(history), "--tokens", str(tokens)]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO_ROOT, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"the {mode} process failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def measure(folder: Path, tokens: int = 4200, runs: int = 1, log: Callable[[str], None] = print) -> RestartResult:
    with tempfile.TemporaryDirectory(prefix="qwen-desk-restart-") as tmp:
        cache, history = Path(tmp) / "prompt-cache", Path(tmp) / "chat.json"
        log(f"restart: building a {tokens:,}-token chat and its cache file")
        _run_child("build", folder, cache, history, tokens)
        snapshot = Path(tmp) / "saved"
        shutil.copytree(cache, snapshot)  # each restore starts from the file the chat left
        restored, cold = [], []
        for i in range(runs):
            for mode in (("restore", "cold") if i % 2 == 0 else ("cold", "restore")):
                if mode == "restore":
                    shutil.rmtree(cache)
                    shutil.copytree(snapshot, cache)
                    restored.append(_run_child(mode, folder, cache, history, tokens))
                else:
                    cold.append(_run_child(mode, folder, cache, history, tokens))
            log(f"restart run {i + 1}: restored {restored[-1]['ttft_s']:.3f} s "
                f"({restored[-1]['cached_tokens']:,} tokens from disk), re-prefilled {cold[-1]['ttft_s']:.2f} s")
    return RestartResult(
        prompt_tokens=cold[0]["prompt_tokens"],
        restored_ttft_s=statistics.median(r["ttft_s"] for r in restored),
        cold_ttft_s=statistics.median(r["ttft_s"] for r in cold),
        restored_cached_tokens=min(r["cached_tokens"] for r in restored),
    )


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.restart_ttft")
    parser.add_argument("--child", choices=("build", "restore", "cold"))
    parser.add_argument("--folder", type=Path, required=True)
    parser.add_argument("--cache", type=Path)
    parser.add_argument("--history", type=Path)
    parser.add_argument("--tokens", type=int, default=4200)
    parser.add_argument("--runs", type=int, default=1)
    args = parser.parse_args(argv)
    if args.child:
        args.mode = args.child
        child(args)
        return 0
    result = measure(args.folder, args.tokens, args.runs)
    print(json.dumps(result.__dict__ | {"speedup": result.speedup}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
