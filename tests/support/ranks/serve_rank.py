"""``qwen-desk serve`` as one rank of a group (argv: serve's options). Every rank first prints
its pid, and each follower prints a line per request it ran (tests/test_distributed_*.py)."""

import json
import logging
import os
import sys

from mlx_backend.commands.cli import main

RANK = int(os.environ.get("MLX_RANK", "0"))


class Report(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        if str(record.msg).startswith("rank %d: request"):
            rank, number, reason, tokens = record.args
            print(json.dumps({"rank": rank, "request": number, "reason": reason, "tokens": tokens}), flush=True)


serving_log = logging.getLogger("mlx_backend.distributed.serving")
serving_log.setLevel(logging.INFO)
serving_log.addHandler(Report())
print(json.dumps({"rank": RANK, "pid": os.getpid()}), flush=True)
sys.exit(main(["serve", *sys.argv[1:]]))
