"""``qwen-desk summarize --model DIR FILE...``: the document-drop flow from a terminal.

The plan and a progress bar go to stderr and the summary alone to stdout, so
``qwen-desk summarize --model M report.pdf > summary.md`` captures just the summary.
"""

from __future__ import annotations

import argparse
import sys
import threading
import time
from typing import Any, Callable, TextIO

from mlx_backend.documents.reading import MAX_DOCUMENT_BYTES, read_documents
from mlx_backend.errors import DocumentError, QwenDeskError
from mlx_backend.events import AnswerDelta, Failed, Finished, PrefillProgress, ThinkingDelta
from mlx_backend.documents.summary import (
    PartSummary,
    SummaryOptions,
    SummaryProgress,
    SummaryTracker,
    plan_for_engine,
    run_summary,
)

_BAR_WIDTH = 24


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "summarize",
        help="summarize long documents (PDF, Word, HTML, Markdown, text, code)",
        description="Summarize one or more documents with a local model. The plan and progress "
        "go to stderr, the summary to stdout. Documents that don't fit the context are "
        "summarized in parts, then combined.",
    )
    parser.add_argument("--model", required=True, help="model folder or Hugging Face repo id")
    parser.add_argument("files", nargs="+", metavar="FILE", help="documents (or folders of documents) to summarize together")
    parser.add_argument("--instructions", help="what the summary should focus on (replaces the default request)")
    parser.add_argument("--max-tokens", type=int, default=SummaryOptions.answer_tokens,
                        help="longest summary, in tokens (default %(default)s)")
    parser.add_argument("--part-tokens", type=int, default=SummaryOptions.part_answer_tokens,
                        help="longest summary of each part when summarizing in parts (default %(default)s)")
    parser.add_argument("--no-yarn", action="store_true", help="never extend the context with YaRN")
    parser.add_argument("--no-kv8", action="store_true", help="never use an 8-bit KV cache")
    parser.add_argument("--think", action="store_true", help="let a hybrid model think before summarizing")
    parser.add_argument("--show-parts", action="store_true", help="print each part's summary to stderr")
    parser.add_argument("--plan-only", action="store_true", help="print the plan and stop")
    parser.add_argument("--seed", type=int, help="random seed for reproducible sampling")
    parser.set_defaults(run=run)
    return parser


def run(args: argparse.Namespace) -> int:
    err = sys.stderr
    if args.max_tokens <= 0 or args.part_tokens <= 0:
        raise QwenDeskError("--max-tokens and --part-tokens must be positive.")
    batch = read_documents(args.files, max_bytes=MAX_DOCUMENT_BYTES)
    named = [failure for failure in batch.failures if failure.folder is None]
    if named:
        # Summarizing only some of the files asked for would be a silent surprise.
        raise DocumentError(" ".join(failure.message for failure in named))
    # A folder's own odd files are said, not fatal: the folder was asked for, not each file.
    for line in batch.messages:
        print(line, file=err, flush=True)
    if not batch.documents:
        raise DocumentError("There is no document to summarize in " + ", ".join(args.files) + ".")

    from mlx_backend.generation.engine import Engine  # MLX loads only once the documents are known to be readable

    print(f"Loading {args.model}…", file=err, flush=True)
    engine = Engine.load(args.model, progress=_download_progress(err))
    options = SummaryOptions(
        instructions=args.instructions,
        answer_tokens=args.max_tokens,
        part_answer_tokens=args.part_tokens,
        enable_thinking=True if args.think else False,
        allow_yarn=not args.no_yarn,
        allow_kv8=not args.no_kv8,
        seed=args.seed,
    )
    plan = plan_for_engine(engine, batch.documents, options)
    print(plan.description, file=err, flush=True)
    if args.plan_only:
        return 0

    cancel = threading.Event()
    bar = ProgressBar(err)
    answered = False
    try:
        for event in run_summary(engine, plan, cancel):
            if isinstance(event, (SummaryProgress, PrefillProgress)):
                bar.update(event)
            elif isinstance(event, PartSummary):
                if args.show_parts:
                    bar.clear()
                    print(f"\n[{event.stage} {event.part}/{event.parts}] {event.text}\n", file=err, flush=True)
            elif isinstance(event, AnswerDelta):
                if not answered:
                    bar.clear()
                    answered = True
                sys.stdout.write(event.text)
                sys.stdout.flush()
            elif isinstance(event, ThinkingDelta):
                continue  # reasoning is not part of the summary
            elif isinstance(event, Failed):
                bar.clear()
                print(f"qwen-desk: {event.message}", file=err)
                return 1
            elif isinstance(event, Finished):
                bar.clear()
                if answered:
                    sys.stdout.write("\n")
                if event.reason == "length":
                    print(f"(The summary reached --max-tokens {args.max_tokens} and was cut off.)", file=err)
                elif event.reason == "cancelled":
                    return 130
                stats = event.stats
                print(f"{stats.prompt_tokens:,} prompt tokens ({stats.cached_tokens:,} cached), "
                      f"{stats.generation_tokens:,} generated at {stats.generation_tps:.1f} tokens/s.", file=err)
    except KeyboardInterrupt:
        cancel.set()
        raise
    return 0


class ProgressBar:
    """One status line on stderr: redrawn in place on a terminal; on a pipe or log file, a line
    per step and at least one every ``interval_s`` while events come (prefill chunks, part
    summaries being written), so a long prefill doesn't look like a hang."""

    def __init__(self, stream: TextIO, *, interval_s: float = 2.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._tracker = SummaryTracker(clock)
        self._stream = stream
        self._clock = clock
        self._interval_s = interval_s
        self._tty = bool(getattr(stream, "isatty", lambda: False)())
        self._drawn = False
        self._last_line = ""
        self._last_written = float("-inf")

    def update(self, event: object) -> None:
        if not self._tracker.feed(event):
            return
        tracker = self._tracker
        filled = int(round(tracker.fraction * _BAR_WIDTH))
        eta = tracker.eta_s
        details = [f"prefill {tracker.prefill_fraction:.0%}"]
        speed = tracker.prefill_tokens_per_s
        if speed and not tracker.answering and tracker.prefill_fraction < 1.0:
            details.append(f"{speed:,.0f} tokens/s")
        if tracker.part_tokens:
            details.append(f"{tracker.part_tokens} tokens written")
        if eta:
            details.append(f"about {max(1, round(eta))}s left")
        details.append(f"{tracker.elapsed_s:.0f}s")
        line = (f"[{'#' * filled}{'.' * (_BAR_WIDTH - filled)}] {tracker.fraction:4.0%} {tracker.label}"
                f" ({', '.join(details)})")
        now = self._clock()
        if self._tty:
            self._stream.write("\r" + line.ljust(len(self._last_line)))
            self._drawn = True
        elif isinstance(event, SummaryProgress) or now - self._last_written >= self._interval_s:
            self._stream.write(line + "\n")
            self._last_written = now
        else:
            return
        self._last_line = line
        self._stream.flush()

    def clear(self) -> None:
        if self._tty and self._drawn:
            self._stream.write("\r" + " " * len(self._last_line) + "\r")
            self._stream.flush()
            self._drawn = False


def _download_progress(stream: TextIO):
    last = [0.0]

    def progress(done: int, total: int) -> None:
        now = time.monotonic()
        if total and (now - last[0] > 0.5 or done >= total):
            last[0] = now
            stream.write(f"\rDownloading: {done / 2**20:,.0f} / {total / 2**20:,.0f} MB")
            if done >= total:
                stream.write("\n")
            stream.flush()

    return progress
