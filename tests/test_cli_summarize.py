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


# --- folders, many documents, progress on a pipe ----------------------------------------------


def test_a_folder_is_summarized_as_its_documents(checkpoint: Path, tmp_path: Path, capsys):
    folder = tmp_path / "Meeting"
    folder.mkdir()
    notes(folder)
    (folder / "agenda.txt").write_text(sample_paragraph(7, words=20), encoding="utf-8")
    (folder / "slides.pptx").write_bytes(b"PK\x03\x04")
    assert main(["summarize", "--model", str(checkpoint), str(folder), "--plan-only"]) == 0
    out, err = capsys.readouterr()
    assert out == ""
    assert "Folder Meeting: 2 documents read, 1 file skipped." in err
    assert "slides.pptx (in Meeting) was skipped: PowerPoint presentations aren't supported." in err
    assert "Documents: 2 documents (agenda.txt, notes.md):" in err
    assert "Plan: All 2 documents in one pass" in err


def test_an_empty_folder_is_an_error_before_the_model_loads(checkpoint: Path, tmp_path: Path, capsys):
    (tmp_path / "Nothing").mkdir()
    assert main(["summarize", "--model", str(checkpoint), str(tmp_path / "Nothing")]) == 2
    err = capsys.readouterr().err
    assert "There is no document to summarize in" in err and "Loading" not in err


class _Pipe:
    """stderr redirected to a file or a pipe."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> None:
        assert "\r" not in text  # a log gets whole lines, no redraws
        self.lines += [line for line in text.split("\n") if line]

    def flush(self) -> None:
        pass


def test_progress_on_a_pipe_prints_a_line_every_few_seconds(tmp_path: Path):
    from mlx_backend.commands.summarize import ProgressBar
    from mlx_backend.documents.summary import SummaryProgress
    from mlx_backend.events import PrefillProgress

    now = [0.0]
    stream = _Pipe()
    bar = ProgressBar(stream, interval_s=2.0, clock=lambda: now[0])
    bar.update(SummaryProgress(1, 1, "single", 3))
    total = 30_000
    bar.update(PrefillProgress(0, total, None))
    for second in range(1, 21):  # a 20 s prefill, a chunk every 0.5 s
        for half in (0.5, 1.0):
            now[0] = second - 1 + half
            bar.update(PrefillProgress(int(total * now[0] / 20), total, 99.0))
    assert len(stream.lines) >= 10  # one at the start, then at least every 2 s
    assert all("Reading the 3 documents" in line for line in stream.lines)
    assert "1,500 tokens/s" in stream.lines[5] and "prefill 100%" in stream.lines[-1]
    # The engine's own (wrong) 99 s is not shown: the ETA is this run's measured pace.
    assert "about 99s left" not in "".join(stream.lines)
    assert "about 10s left" in stream.lines[5]  # at 10 s of a steady 20 s prefill


def test_the_prefill_eta_follows_a_slowing_prefill():
    """Attention makes later tokens slower: the measured fit sees it, a straight line would not."""
    from mlx_backend.documents.summary import PrefillPace

    def seconds(n: int) -> float:
        return 1e-3 * n + 4e-7 * n * n

    pace = PrefillPace()
    total, chunk = 20_000, 512
    done = 0
    while done < total // 4:
        pace.observe(done, seconds(done))
        done += chunk
    true_left = seconds(total) - seconds(done - chunk)
    straight_left = (total - (done - chunk)) / pace.tokens_per_s
    assert straight_left < 0.6 * true_left  # why a tokens/s extrapolation said "10 s" for 88 s
    assert pace.seconds_left(total) == pytest.approx(true_left, rel=0.1)
    # A new request starts with the pace measured on the earlier one.
    pace.start_request()
    pace.observe(0, 100.0)
    assert pace.seconds_left(total) == pytest.approx(seconds(total), rel=0.1)


def test_parts_say_which_sections_they_come_from(checkpoint: Path, tmp_path: Path):
    from mlx_backend.documents.summary.running import run_summary as run
    from mlx_backend.documents.summary.tokens import TokenTools

    chapters = ["Harbour history", "Budget for 2025", "Open questions"]
    text = "\n\n".join(f"## {title}\n\n" + "\n\n".join(sample_paragraph(c * 10 + n, words=60) for n in range(6))
                       for c, title in enumerate(chapters))
    path = tmp_path / "report.md"
    path.write_text(text, encoding="utf-8")
    engine = Engine.load(checkpoint)
    options = SummaryOptions(answer_tokens=16, part_answer_tokens=8, enable_thinking=False, seed=0, allow_yarn=False)
    plan = plan_for_engine(engine, [read_document(path)], options)
    assert plan.strategy == "map_reduce" and len(plan.parts) > len(chapters)
    # Every part names the section(s) it covers, in order, and its prompt carries that label.
    covered = [heading for part in plan.parts for heading in part.sections]
    assert [h for i, h in enumerate(covered) if i == 0 or covered[i - 1] != h] == chapters
    for part in plan.parts:
        assert part.location.startswith(("section “", "sections “"))
        request = plan.part_request(part)
        prompt = request.messages[-1].content
        assert f'where="{part.location}"' in prompt and f"({part.location} of report.md)" in prompt
        assert TokenTools(engine.tokenizer).prompt(request) + request.max_tokens <= plan.window  # labels fit
    # The combine request's part headings carry the labels, and it asks for sources.
    requests = []
    for event in run(engine, plan):
        if type(event).__name__ == "SummaryRequestStarted":
            requests.append(event.request)
    final = requests[-1].messages[-1].content
    assert "name in parentheses the pages or section it comes from" in final
    assert "(section “Harbour history”)" in final or "(sections “Harbour history”" in final


def test_parts_of_a_paged_document_say_which_pages_they_come_from(checkpoint: Path, tmp_path: Path):
    """A reader that knows page starts (Document.page_starts, as a PDF reader can fill it)."""
    from mlx_backend.documents.reading import Document

    pages = [f"Page {n} begins here. " + sample_paragraph(n, words=70) for n in range(1, 13)]
    text = "\n\n".join(pages)
    starts = tuple(text.index(f"Page {n} begins here.") for n in range(1, 13))
    document = Document("book.pdf", tmp_path / "book.pdf", "pdf", text, pages=12, page_starts=starts)
    engine = Engine.load(checkpoint)
    options = SummaryOptions(answer_tokens=16, part_answer_tokens=8, enable_thinking=False, seed=0, allow_yarn=False)
    plan = plan_for_engine(engine, [document], options)
    assert plan.strategy == "map_reduce" and len(plan.parts) >= 3
    previous_last = 0
    for part in plan.parts:
        first, last = part.pages
        assert part.text.startswith(f"Page {first} begins here.") or first == previous_last
        assert f"Page {last} begins here." in part.text or last == first
        assert first >= previous_last and last >= first
        previous_last = last
        label = f"page {first}" if first == last else f"pages {first}–{last}"
        assert part.location == label
        assert f"({label} of book.pdf)" in plan.part_request(part).messages[-1].content
    assert plan.parts[0].pages[0] == 1 and plan.parts[-1].pages[1] == 12
