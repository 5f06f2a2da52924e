"""Issue #15: every bad input a new user meets ends in exit code 2, exactly one `error:` line that names the file
and the problem (one line even when stderr is a pipe), no traceback and no output; extreme valid input (a 10 MB
review) runs in bounded memory.

The commands run as the installed CLI in a subprocess, so stderr is a pipe (not a terminal), exactly as in logs
and CI, where rich used to hard-wrap at 80 columns.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# Long enough that every message passes 80 columns: a wrapped message would break this name across lines.
LONG = "a-folder-name-long-enough-that-any-message-naming-it-passes-eighty-columns"


def cli(*args: object, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    environment = {**os.environ, "COLUMNS": "40", **(env or {})}
    return subprocess.run([sys.executable, "-m", "fsa_distill.cli", *map(str, args)], cwd=ROOT, env=environment,
                          capture_output=True, text=True, timeout=timeout, check=False)


def assert_one_clean_error(done: subprocess.CompletedProcess, path: object, problem: str) -> str:
    """Exit 2, one `error:` line naming `path` and `problem`, no traceback; returns that line."""
    assert done.returncode == 2, (done.returncode, done.stderr[-3000:])
    assert "Traceback" not in done.stderr, done.stderr[-3000:]
    errors = [line for line in done.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1 and errors[0].startswith("error: "), done.stderr
    assert str(path) in errors[0], (str(path), errors[0])
    assert problem in errors[0], (problem, errors[0])
    return errors[0]


def files_under(folder: Path) -> list[str]:
    return sorted(str(path.relative_to(folder)) for path in folder.rglob("*"))


@pytest.fixture
def place(tmp_path: Path) -> Path:
    folder = tmp_path / LONG
    folder.mkdir()
    return folder


GOLD = [{"ID": "1", "sentence": "The pizza was great.",
         "aspects": [{"from": "4", "to": "9", "target": "pizza", "category": None, "polarity": "positive"}]}]


def write_gold(path: Path, sentences: list[dict] = GOLD) -> Path:
    path.write_text(json.dumps(sentences), encoding="utf-8")
    return path


def write_pred(path: Path, n: int = 1) -> Path:
    path.write_text('{"prediction": "pizza | positive"}\n' * n, encoding="utf-8")
    return path


# --------------------------------------------------------------------------- paths of the wrong kind


def test_convert_input_that_is_a_directory(place: Path) -> None:
    out = place / "out.json"
    done = cli("data", "convert", place, "--task", "atsa", "--out", out)
    assert_one_clean_error(done, place, "XML file is a directory, not a file")
    assert not out.exists()


def test_convert_output_that_is_a_directory(place: Path) -> None:
    xml = place / "in.xml"
    xml.write_text('<sentences><sentence id="1"><text>ok</text></sentence></sentences>', encoding="utf-8")
    out = place / "out.json"
    out.mkdir()
    done = cli("data", "convert", xml, "--task", "atsa", "--out", out)
    assert_one_clean_error(done, out, "is a directory, not a file")
    assert files_under(place) == ["in.xml", "out.json"]


def test_score_gold_that_is_a_directory(place: Path) -> None:
    done = cli("score", "--task", "atsa", "--gold", place, "--pred", write_pred(place / "p.jsonl"))
    assert_one_clean_error(done, place, "gold file is a directory, not a file")


def test_score_predictions_that_are_a_directory(place: Path) -> None:
    pred = place / "pred"
    pred.mkdir()
    done = cli("score", "--task", "atsa", "--gold", write_gold(place / "g.json"), "--pred", pred)
    assert_one_clean_error(done, pred, "prediction file is a directory, not a file")


def test_run_config_that_is_a_directory(place: Path) -> None:
    done = cli("run", "--config", place, "--set", f"work_dir={place / 'work'}")
    assert_one_clean_error(done, place, "config file is a directory, not a file")
    assert files_under(place) == []


def test_run_work_dir_that_is_a_file(place: Path) -> None:
    work = place / "work"
    work.write_text("not a folder", encoding="utf-8")
    done = cli("run", "--set", f"work_dir={work}")
    assert_one_clean_error(done, work, "work dir is a file, not a directory")
    assert files_under(place) == ["work"] and work.read_text(encoding="utf-8") == "not a folder"


def test_generate_corpus_that_is_a_directory(place: Path) -> None:
    out = place / "out"
    done = cli("generate", "--corpus", place, "--out", out)
    assert_one_clean_error(done, place, "review file is a directory, not a file")
    assert not out.exists()


def test_predict_input_that_is_a_directory(place: Path, tiny_student_dir: Path) -> None:
    folder = place / "reviews"
    folder.mkdir()
    out = place / "pred.jsonl"
    done = cli("predict", "--model", tiny_student_dir, "--input", folder, "--out", out)
    assert_one_clean_error(done, folder, "review file is a directory, not a file")
    assert not out.exists()


def test_predict_output_that_is_a_directory(place: Path, tiny_student_dir: Path) -> None:
    reviews = place / "r.txt"
    reviews.write_text("Nice.\n", encoding="utf-8")
    out = place / "pred.jsonl"
    out.mkdir()
    done = cli("predict", "--model", tiny_student_dir, "--input", reviews, "--out", out)
    assert_one_clean_error(done, out, "is a directory, not a file")
    assert list(out.iterdir()) == []


def test_predict_unwritable_output_is_found_before_the_model_loads(place: Path) -> None:
    """The --out check comes first: even with a model folder that does not exist, the output is what is
    reported, so a long inference can never end in an unwritable path."""
    blocker = place / "a-file"
    blocker.write_text("x", encoding="utf-8")
    reviews = place / "r.txt"
    reviews.write_text("Nice.\n", encoding="utf-8")
    out = blocker / "pred.jsonl"  # below a regular file: can never be created
    done = cli("predict", "--model", place / "no-model", "--input", reviews, "--out", out)
    assert_one_clean_error(done, out, "is a file, not a directory")
    assert files_under(place) == ["a-file", "r.txt"]


# --------------------------------------------------------------------------- CSV corpora


def test_csv_unterminated_quote_names_its_line(place: Path) -> None:
    corpus = place / "reviews.csv"
    corpus.write_text('text,stars\nGood,5\n"Bad, and then,1\nFine,3\n', encoding="utf-8")
    out = place / "out"
    done = cli("generate", "--corpus", corpus, "--out", out)
    assert_one_clean_error(done, corpus, "line 3: a quoted field opened here is never closed (unbalanced quote)")
    assert not out.exists()


def test_csv_nul_byte_names_its_line_after_blank_lines(place: Path) -> None:
    corpus = place / "reviews.csv"
    corpus.write_bytes(b"text,stars\n\n\nGood,5\n\nBa\x00d,1\n")
    out = place / "out"
    done = cli("generate", "--corpus", corpus, "--out", out)
    assert_one_clean_error(done, corpus, "line 6: NUL byte")
    assert not out.exists()


def test_csv_line_numbers_after_blank_lines(place: Path) -> None:
    corpus = place / "reviews.csv"
    corpus.write_text('text,stars\n\nGood,5\n\n\n"Two\nlines",4\n\nFine,x,extra\n,\nBad,"1"x\n', encoding="utf-8")
    done = cli("generate", "--corpus", corpus, "--out", place / "out")
    assert_one_clean_error(done, corpus, "line 11: malformed CSV at line 11")


def test_csv_review_longer_than_the_field_limit_is_read(place: Path, tiny_student_dir: Path) -> None:
    """A 300,000-character field (the csv module's default limit is 131,072) predicts, cut to the input."""
    corpus = place / "long.csv"
    corpus.write_text('id,text\nlong,"' + "great food and " * 20_000 + '"\nshort,Fine.\n', encoding="utf-8")
    out = place / "pred.jsonl"
    done = cli("predict", "--model", tiny_student_dir, "--input", corpus, "--out", out, "--max-new-tokens", "4",
               "--json")
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["reviews"], summary["truncated"]) == (2, 1)
    assert [json.loads(line)["id"] for line in out.read_text(encoding="utf-8").splitlines()] == ["long", "short"]


@pytest.mark.parametrize("suffix", [".jsonl"])  # .txt: same cut, tests/benchmark/test_importers.py
def test_ten_megabyte_review_predicts_in_bounded_memory(place: Path, tiny_student_dir: Path, suffix: str) -> None:
    """A 10 MB one-line review is cut as it is read; the whole `predict` peaks under 1.5 GiB of RSS (it took
    5.7 GB when the tokenizer saw the whole text). Peak RSS comes from the kernel via getrusage of a wrapper
    whose only child is the CLI."""
    text = ("The pasta was cold but the staff were lovely and the wine list is long. " * 140_000)[:10_000_000]
    corpus = place / f"huge{suffix}"
    line = text if suffix == ".txt" else json.dumps({"id": "huge", "text": text})
    corpus.write_text(line + "\n", encoding="utf-8")
    assert corpus.stat().st_size >= 10_000_000
    out = place / "pred.jsonl"
    wrapper = ("import json, resource, subprocess, sys; done = subprocess.run(sys.argv[1:]); "
               "print(json.dumps({'rc': done.returncode, "
               "'max_rss_kib': resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}), file=sys.stderr)")
    done = subprocess.run(
        [sys.executable, "-c", wrapper, sys.executable, "-m", "fsa_distill.cli", "predict", "--model",
         str(tiny_student_dir), "--input", str(corpus), "--out", str(out), "--max-new-tokens", "4", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False)
    measured = json.loads(done.stderr.strip().splitlines()[-1])
    assert measured["rc"] == 0, done.stderr[-3000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert (summary["reviews"], summary["truncated"]) == (1, 1)
    peak_gib = measured["max_rss_kib"] / 2**20
    print(f"10 MB {suffix} review: predict peak RSS {peak_gib:.3f} GiB")
    assert peak_gib < 1.5
    assert len(out.read_text(encoding="utf-8").splitlines()) == 1


# --------------------------------------------------------------------------- gold files and data dirs


def test_gold_with_a_non_integer_offset(place: Path) -> None:
    bad = [{**GOLD[0], "aspects": [{**GOLD[0]["aspects"][0], "from": "four"}]}]
    gold = write_gold(place / "gold.json", bad)
    done = cli("score", "--task", "atsa", "--gold", gold, "--pred", write_pred(place / "p.jsonl"))
    assert_one_clean_error(done, gold, "item 0 (ID=1) aspect 1: \"from\" is 'four', not a character offset")


def test_atsa_gold_scored_as_acsa_names_the_missing_field(place: Path) -> None:
    gold = write_gold(place / "gold.json")
    done = cli("score", "--task", "acsa", "--gold", gold, "--pred", write_pred(place / "p.jsonl"))
    assert_one_clean_error(done, gold, 'no aspect has a "category"')
    assert done.stdout == ""


def test_zeroshot_honours_fsa_data_dir(place: Path, tiny_student_dir: Path, benchmark_dir: Path) -> None:
    """FSA_DATA_DIR is what zeroshot reads: a missing one is an error naming the variable, and a copy holding two
    sentences is scored on exactly those (the default search would find the full ../shared copy)."""
    missing = place / "no-such-benchmark"
    done = cli("zeroshot", "--model", tiny_student_dir, "--task", "atsa", "--dataset", "rest14",
               env={"FSA_DATA_DIR": str(missing)})
    assert_one_clean_error(done, missing, "benchmark folder (from FSA_DATA_DIR) not found")

    small = place / "small"
    (small / "atsa" / "rest14").mkdir(parents=True)
    sentences = json.loads((benchmark_dir / "atsa" / "rest14" / "test.json").read_text(encoding="utf-8-sig"))[:2]
    for split in ("test", "hard_test"):
        (small / "atsa" / "rest14" / f"{split}.json").write_text(json.dumps(sentences), encoding="utf-8")
    done = cli("zeroshot", "--model", tiny_student_dir, "--task", "atsa", "--dataset", "rest14", "--json",
               env={"FSA_DATA_DIR": str(small)})
    assert done.returncode == 0, done.stderr[-3000:]
    from fsa_distill.tasks.stages.zeroshot import aspect_items

    expected = 2 * len(aspect_items(sentences, "atsa"))
    assert json.loads(done.stdout.strip().splitlines()[-1])["n_aspects"] == expected


def test_predict_data_dir_flag_wins_over_fsa_data_dir(place: Path, tiny_student_dir: Path) -> None:
    missing = place / "flag-folder"
    done = cli("predict", "--model", tiny_student_dir, "--input", "atsa/rest14/test", "--out", place / "p.jsonl",
               "--data-dir", missing, env={"FSA_DATA_DIR": str(place)})
    assert_one_clean_error(done, missing, "benchmark folder (from --data-dir) not found")


@pytest.mark.parametrize(("args", "option", "problem"), [
    (["--part", "nope"], "--part", "expected all, engines or http"),
    (["--part", "http", "--clients", "0,4"], "--clients", "comma-separated numbers from 1 to 256"),
    (["--part", "http", "--clients", "1,x"], "--clients", "comma-separated numbers from 1 to 256"),
])
def test_bench_serve_bad_part_or_levels(place: Path, args: list[str], option: str, problem: str) -> None:
    """Checked before any model is built or server started: nothing is written."""
    done = cli("bench", "serve", *args, "--work-dir", place / "work")
    assert_one_clean_error(done, option, problem)
    assert files_under(place) == []
