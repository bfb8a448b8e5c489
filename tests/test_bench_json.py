"""``python bench/run.py --json``: every stable key is present; one not measured is null, with why.

The measurements themselves are replaced here (they take minutes); what is checked is how their
figures become the JSON object.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("mlx_lm")

from bench import run  # noqa: E402


def test_json_has_every_key_with_nulls_explained(monkeypatch, capsys) -> None:
    qwen3 = run.Section("| qwen3 table |", {"decode_ratio": 0.99, "prefill_ratio": 1.01}, {})
    monkeypatch.setattr(run, "run_qwen3", lambda args, command: qwen3)
    monkeypatch.setattr(
        run,
        "SECTIONS",
        {
            "restart": lambda args, command: run.Section("| restart |", {"restart_ttft_speedup": 31.5}, {}),
        },
    )
    parser = run.argparse.ArgumentParser()
    run.add_arguments(parser)
    assert run.run_benchmark(parser.parse_args(["--json", "--only", "qwen3"])) == 0
    out, err = capsys.readouterr()
    figures = json.loads(out)
    assert set(run.JSON_KEYS) <= set(figures)
    assert figures["decode_ratio"] == 0.99 and figures["restart_ttft_speedup"] == 31.5
    missing = {key for key in run.JSON_KEYS if figures[key] is None}
    assert missing == {"turn5_ttft_speedup", "peak_memory_ratio", "speculative_speedup",
                       "speculative_vs_mlx_lm", "mtp_speedup", "app_path_ratio"}
    assert set(figures["notes"]) == missing and all(figures["notes"].values())
    assert "--only qwen3" in figures["notes"]["mtp_speedup"]
    assert "--only qwen3" in figures["notes"]["speculative_speedup"]
    assert "| qwen3 table |" in err and "| restart |" in err  # the table still shows, on stderr


def test_without_json_the_table_is_printed(monkeypatch, capsys) -> None:
    monkeypatch.setattr(run, "run_qwen3", lambda args, command: run.Section("| qwen3 table |", {}, {}))
    monkeypatch.setattr(run, "SECTIONS", {})
    parser = run.argparse.ArgumentParser()
    run.add_arguments(parser)
    run.run_benchmark(parser.parse_args(["--only", "qwen3"]))
    assert capsys.readouterr().out.strip() == "| qwen3 table |"


def test_the_speculative_rows_fill_their_three_keys(monkeypatch, capsys) -> None:
    monkeypatch.setattr(run.speculative, "run", lambda args, command, log: (
        "| speculative |", {"speculative_speedup": 1.7, "speculative_vs_mlx_lm": 1.1, "mtp_speedup": 1.3}))
    parser = run.argparse.ArgumentParser()
    run.add_arguments(parser)
    assert run.run_benchmark(parser.parse_args(["--json", "--only", "speculative"])) == 0
    out, err = capsys.readouterr()
    figures = json.loads(out)
    assert figures["speculative_speedup"] == 1.7 and figures["speculative_vs_mlx_lm"] == 1.1
    assert figures["mtp_speedup"] == 1.3 and "mtp_speedup" not in figures["notes"]
    assert "| speculative |" in err and figures["decode_ratio"] is None
