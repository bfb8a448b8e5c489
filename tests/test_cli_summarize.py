"""``qwen-desk summarize``: plan and progress on stderr, exactly the summary on stdout."""

from __future__ import annotations

from pathlib import Path

import pytest

from mlx_backend.commands.cli import main
from mlx_backend.documents.reading import read_document
from mlx_backend.generation.engine import Engine
from mlx_backend.events import AnswerDelta
from mlx_backend.documents.summary import SummaryOptions, plan_for_engine, run_summary
from tests.support.checkpoints import write_random_checkpoint
from tests.support.documents import sample_paragraph, write_encrypted_pdf, write_long_pdf

FAST = ["--max-tokens", "16", "--part-tokens", "8", "--seed", "0"]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return write_random_checkpoint(tmp_path_factory.mktemp("cli-summ"), max_position_embeddings=1024)


def notes(tmp_path: Path, paragraphs: int = 3) -> Path:
    path = tmp_path / "notes.md"
    path.write_text("\n\n".join(sample_paragraph(n, words=30) for n in range(paragraphs)), encoding="utf-8")
    return path


def test_stdout_is_exactly_the_summary(checkpoint: Path, tmp_path: Path, capsys):
    document = notes(tmp_path)
    assert main(["summarize", "--model", str(checkpoint), str(document), *FAST]) == 0
    out, err = capsys.readouterr()
    assert "Plan: Whole document in one pass" in err
    assert "Reading the document" in err  # the progress line
    assert "prompt tokens" in err

    # The same plan run through the library gives the same text: stdout carries nothing else.
    engine = Engine.load(checkpoint)
    options = SummaryOptions(answer_tokens=16, part_answer_tokens=8, enable_thinking=False, seed=0)
    plan = plan_for_engine(engine, [read_document(document)], options)
    expected = "".join(e.text for e in run_summary(engine, plan) if isinstance(e, AnswerDelta))
    assert expected and out == expected + "\n"


def test_long_pdf_is_summarized_in_parts_with_a_line_per_step(checkpoint: Path, tmp_path: Path, capsys):
    pdf = write_long_pdf(tmp_path / "book.pdf", page_count=12)
    assert main(["summarize", "--model", str(checkpoint), str(pdf), "--no-yarn", "--show-parts", *FAST]) == 0
    out, err = capsys.readouterr()
    assert "book.pdf (12 pages)" in err
    plan_line = next(line for line in err.splitlines() if line.startswith("Plan: Map-reduce in "))
    parts = int(plan_line.split("Map-reduce in ")[1].split(" ")[0])
    assert parts >= 3
    for n in range(1, parts + 1):
        assert sum(f"Summarizing part {n} of {parts}" in line for line in err.splitlines()) == 1
        assert f"[map {n}/{parts}]" in err  # --show-parts prints every kept part summary
    assert "Combining the part summaries" in err
    assert out.strip() and "[map" not in out and "Plan:" not in out


def test_plan_only_runs_nothing(checkpoint: Path, tmp_path: Path, capsys):
    assert main(["summarize", "--model", str(checkpoint), str(notes(tmp_path)), "--plan-only"]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "Plan: Whole document in one pass" in err and "prompt tokens" not in err


def test_bad_documents_fail_before_the_model_loads(checkpoint: Path, tmp_path: Path, capsys):
    locked = write_encrypted_pdf(tmp_path / "locked.pdf")
    (tmp_path / "table.xlsx").write_bytes(b"PK\x03\x04")
    code = main(["summarize", "--model", str(checkpoint), str(notes(tmp_path)), str(locked), str(tmp_path / "table.xlsx")])
    out, err = capsys.readouterr()
    assert code == 2 and out == ""
    assert "locked.pdf is password-protected" in err
    assert "table.xlsx: Excel spreadsheets aren't supported" in err
    assert "Loading" not in err  # refused before any model work


def test_missing_file_and_bad_limits(checkpoint: Path, tmp_path: Path, capsys):
    assert main(["summarize", "--model", str(checkpoint), str(tmp_path / "nope.txt")]) == 2
    assert "nope.txt: the file doesn't exist" in capsys.readouterr().err
    assert main(["summarize", "--model", str(checkpoint), str(notes(tmp_path)), "--max-tokens", "0"]) == 2
    assert "--max-tokens and --part-tokens must be positive" in capsys.readouterr().err
