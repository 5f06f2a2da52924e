"""SemEval XML → benchmark JSON (both formats, both tasks, bad files) and review corpora (JSONL / CSV / TXT)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from fsa_distill.benchmark.data import read_benchmark_file
from fsa_distill.benchmark.importers import convert_semeval_xml, read_review_corpus
from fsa_distill.benchmark.scorer import score_predictions
from fsa_distill.benchmark.targets import linearise
from fsa_distill.cli.commands.data import convert
from fsa_distill.core.errors import InputError

SEMEVAL_2014 = """<?xml version="1.0" encoding="UTF-8"?>
<sentences>
  <sentence id="813">
    <text>All the appetizers and salads were fabulous, the steak was mouth watering and the pasta was delicious!!!</text>
    <aspectTerms>
      <aspectTerm term="appetizers" polarity="positive" from="8" to="18"/>
      <aspectTerm term="salads" polarity="positive" from="23" to="29"/>
      <aspectTerm term="steak" polarity="positive" from="49" to="54"/>
      <aspectTerm term="pasta" polarity="conflict" from="82" to="87"/>
    </aspectTerms>
    <aspectCategories>
      <aspectCategory category="food" polarity="positive"/>
    </aspectCategories>
  </sentence>
  <sentence id="1151">
    <text>Café au lait — tasty.</text>
    <aspectTerms><aspectTerm term="Café au lait" polarity="positive" from="0" to="12"/></aspectTerms>
    <aspectCategories><aspectCategory category="food" polarity="positive"/></aspectCategories>
  </sentence>
  <sentence id="2777">
    <text>To my wife's birthday, we went there.</text>
    <aspectCategories><aspectCategory category="anecdotes/miscellaneous" polarity="neutral"/></aspectCategories>
  </sentence>
</sentences>
"""

SEMEVAL_2016 = """<?xml version="1.0" encoding="UTF-8" standalone="yes"?>
<Reviews>
  <Review rid="1004293">
    <sentences>
      <sentence id="1004293:0">
        <text>Judging from previous posts this used to be a good place, but not any longer.</text>
        <Opinions>
          <Opinion target="place" category="RESTAURANT#GENERAL" polarity="negative" from="51" to="56"/>
        </Opinions>
      </sentence>
      <sentence id="1004293:1">
        <text>The food was lousy - too sweet or too salty and the portions tiny.</text>
        <Opinions>
          <Opinion target="food" category="FOOD#QUALITY" polarity="negative" from="4" to="8"/>
          <Opinion target="portions" category="FOOD#STYLE_OPTIONS" polarity="negative" from="52" to="60"/>
        </Opinions>
      </sentence>
      <sentence id="1004293:2">
        <text>Avoid this place!</text>
        <Opinions>
          <Opinion target="NULL" category="RESTAURANT#GENERAL" polarity="negative" from="0" to="0"/>
        </Opinions>
      </sentence>
      <sentence id="1004293:3" OutOfScope="TRUE">
        <text>We walked in.</text>
      </sentence>
    </sentences>
  </Review>
</Reviews>
"""


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path


# --------------------------------------------------------------------------- SemEval-2014

def test_semeval_2014_atsa(tmp_path):
    sentences, skipped = convert_semeval_xml(write(tmp_path, "rest.xml", SEMEVAL_2014), "atsa")
    assert [s["ID"] for s in sentences] == ["813", "1151", "2777"]
    assert sentences[2]["aspects"] == []  # no aspect term: kept, as the benchmark does
    assert sentences[0]["aspects"][3] == {"from": "82", "to": "87", "target": "pasta", "category": None,
                                          "polarity": "conflict"}
    assert sentences[1]["aspects"][0]["target"] == "Café au lait"
    assert skipped == []
    assert linearise(sentences[0], "atsa") == (
        "appetizers | positive ; salads | positive ; steak | positive ; pasta | conflict")


def test_semeval_2014_acsa(tmp_path):
    path = write(tmp_path, "rest.xml", SEMEVAL_2014.replace(
        '<aspectCategories><aspectCategory category="food" polarity="positive"/></aspectCategories>', "", 1))
    sentences, skipped = convert_semeval_xml(path, "acsa")
    assert skipped == []
    assert sentences[2]["aspects"] == [{"from": None, "to": None, "target": None,
                                        "category": "anecdotes/miscellaneous", "polarity": "neutral"}]
    assert sentences[1]["aspects"] == []  # terms but no category: kept for ACSA with no aspect


@pytest.mark.parametrize(("document", "task"), [(d, t) for d in ("2014", "2016") for t in ("atsa", "acsa")])
def test_every_format_keeps_sentences_without_targets(tmp_path, document, task):
    """One rule for both XML formats and both tasks: every sentence is kept, in file order; a sentence without
    an aspect for the task has "aspects": [] and scores like the benchmark's own (an empty target)."""
    bare = '<sentence id="bare"><text>We came back.</text></sentence>\n'
    if document == "2014":
        content = SEMEVAL_2014.replace("</sentences>", bare + "</sentences>")
    else:
        content = SEMEVAL_2016.replace("    </sentences>", bare + "    </sentences>")
    sentences, _ = convert_semeval_xml(write(tmp_path, f"{document}.xml", content), task)
    assert len(sentences) == content.count("<sentence ")
    empty = [s for s in sentences if not s["aspects"]]
    assert sentences[-1] == {"ID": "bare", "sentence": "We came back.", "aspects": []}
    assert empty[-1] is sentences[-1]
    assert all(linearise(s, task) == "" for s in empty)


# --------------------------------------------------------------------------- SemEval-2015/2016

def test_semeval_2016_atsa_skips_implicit_targets_with_reasons(tmp_path):
    sentences, skipped = convert_semeval_xml(write(tmp_path, "rest16.xml", SEMEVAL_2016), "atsa")
    assert [s["ID"] for s in sentences] == ["1004293:0", "1004293:1", "1004293:2", "1004293:3"]
    assert sentences[2]["aspects"] == sentences[3]["aspects"] == []
    assert sentences[1]["aspects"][1] == {"from": "52", "to": "60", "target": "portions",
                                          "category": "FOOD#STYLE_OPTIONS", "polarity": "negative"}
    assert [item["id"] for item in skipped] == ["1004293:2"]
    assert "implicit target" in skipped[0]["reason"]


def test_semeval_2016_acsa_keeps_every_opinion(tmp_path):
    sentences, skipped = convert_semeval_xml(write(tmp_path, "rest16.xml", SEMEVAL_2016), "acsa")
    assert [len(s["aspects"]) for s in sentences] == [1, 2, 1, 0]
    assert sentences[2]["aspects"][0] == {"from": "0", "to": "0", "target": "NULL", "category": "RESTAURANT#GENERAL",
                                          "polarity": "negative"}
    assert skipped == []
    assert linearise(sentences[1], "acsa") == "food quality | negative ; food style_options | negative"


# --------------------------------------------------------------------------- bad files

BAD_FILES = {
    "malformed": (SEMEVAL_2014.replace("</text>\n    <aspectTerms>", "\n    <aspectTerms>", 1),
                  r"line \d+ column \d+: malformed XML"),
    "latin1": (SEMEVAL_2014.encode("latin-1", errors="replace").replace(b"Caf?", b"Caf\xe9"),
               r"line 16: not valid UTF-8 \(byte 0xe9"),
    "polarity": (SEMEVAL_2014.replace('polarity="conflict"', 'polarity="mixed"'),
                 r"sentence id=813: aspectTerm: unknown polarity 'mixed'"),
    "offsets": (SEMEVAL_2014.replace('from="49" to="54"', 'from="50" to="55"'),
                r"sentence id=813: aspectTerm term='steak': offsets from=50 to=55 select 'teak '"),
    "offsets_2016": (SEMEVAL_2016.replace('from="4" to="8"', 'from="4" to="x"'),
                     r"sentence id=1004293:1: Opinion term='food': from='4' to='x' are not integer offsets"),
    "root": ("<reviews/>", r"<reviews>: root element is neither"),
}


@pytest.mark.parametrize("case", list(BAD_FILES))
def test_bad_files_name_file_and_element(tmp_path, case):
    content, message = BAD_FILES[case]
    path = write(tmp_path, f"{case}.xml", content)
    with pytest.raises(InputError, match=message) as caught:
        convert_semeval_xml(path, "atsa")
    assert caught.value.path == str(path)


_OPINION_2016 = ('<Opinions><Opinion target="place" category="RESTAURANT#GENERAL" polarity="negative" from="51" '
                 'to="56"/></Opinions>')
_SENTENCE_2016 = ('<sentence id="x:1"><text>Judging from previous posts this used to be a good place, but not any '
                  f'longer.</text>{_OPINION_2016}</sentence>')
MIXED_MARKUP = {
    # a 2016-style sentence after 2014-style ones: its aspects would have been read as none
    "2016_sentence_in_2014_file": (SEMEVAL_2014.replace("</sentences>", _SENTENCE_2016 + "</sentences>"),
                                   (r"sentence id=x:1: SemEval-2016 markup \(<Opinions>\) in a file whose "
                                    r"sentence id=813 uses SemEval-2014 markup")),
    "2014_sentence_in_2016_file": (SEMEVAL_2016.replace(
        "</sentences>", ('<sentence id="y"><text>Great steak.</text><aspectTerms><aspectTerm term="steak" '
                         'polarity="positive" from="6" to="11"/></aspectTerms></sentence></sentences>')),
        (r"sentence id=y: SemEval-2014 markup \(<aspectTerms>, <aspectCategories>\) in a file whose sentence "
         r"id=1004293:0 uses SemEval-2016")),
    "both_in_one_sentence": (SEMEVAL_2014.replace("</aspectCategories>\n  </sentence>",
                                                  "</aspectCategories>" + _OPINION_2016 + "</sentence>", 1),
                             r"sentence id=813: mixes SemEval-2014 .* and 2015/2016 \(<Opinions>\) markup"),
    # 2014-layout sentences (no <Review>) under a 2016 root: not found where the root says they are
    "2014_layout_in_2016_file": (SEMEVAL_2016.replace("</Reviews>", _SENTENCE_2016 + "</Reviews>"),
                                 r"sentence id=x:1: outside <Reviews><Review><sentences><sentence>"),
}


@pytest.mark.parametrize("task", ["atsa", "acsa"])
@pytest.mark.parametrize("case", list(MIXED_MARKUP))
def test_mixed_semeval_markup_is_an_error_not_lost_aspects(tmp_path, case, task):
    content, message = MIXED_MARKUP[case]
    with pytest.raises(InputError, match=message):
        convert_semeval_xml(write(tmp_path, f"{case}.xml", content), task)


def test_2016_markup_under_a_2014_root_keeps_its_aspects(tmp_path):
    """The root says where sentences are; each sentence's own markup says how its aspects are written."""
    path = write(tmp_path, "opinions.xml", f"<sentences>{_SENTENCE_2016}</sentences>")
    sentences, _ = convert_semeval_xml(path, "atsa")
    assert sentences[0]["aspects"] == [{"from": "51", "to": "56", "target": "place",
                                        "category": "RESTAURANT#GENERAL", "polarity": "negative"}]


ENTITY_ATTACKS = {
    "billion_laughs": '<?xml version="1.0"?><!DOCTYPE s [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;'
                      '&a;&a;&a;"><!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">]><sentences><sentence id="1"><text>'
                      '&c;</text></sentence></sentences>',
    "quadratic_blowup": '<?xml version="1.0"?><!DOCTYPE s [<!ENTITY a "' + "x" * 10_000 + '">]><sentences>'
                        '<sentence id="1"><text>' + "&a;" * 1_000 + "</text></sentence></sentences>",
    "external_entity": '<?xml version="1.0"?><!DOCTYPE s [<!ENTITY e SYSTEM "file:///etc/passwd">]><sentences>'
                       '<sentence id="1"><text>&e;</text></sentence></sentences>',
    "external_dtd": '<?xml version="1.0"?><!DOCTYPE sentences SYSTEM "http://example.invalid/x.dtd"><sentences>'
                    '<sentence id="1"><text>ok</text></sentence></sentences>',
}


@pytest.mark.parametrize("case", list(ENTITY_ATTACKS))
def test_entity_declarations_and_external_references_are_refused(tmp_path, case):
    """defusedxml refuses what expat would only limit: any entity declaration, external entity or DTD."""
    path = write(tmp_path, f"{case}.xml", ENTITY_ATTACKS[case])
    with pytest.raises(InputError, match="refused: the XML declares a DTD, entities or external references"):
        convert_semeval_xml(path, "atsa")


def test_declared_latin1_encoding_is_honoured(tmp_path):
    content = SEMEVAL_2014.replace('encoding="UTF-8"', 'encoding="ISO-8859-1"').replace(" — ", " - ")
    sentences, _ = convert_semeval_xml(write(tmp_path, "latin.xml", content.encode("latin-1")), "atsa")
    assert sentences[1]["sentence"] == "Café au lait - tasty."


# --------------------------------------------------------------------------- the CLI

def run_convert(*args):
    app = typer.Typer()
    app.command()(convert)
    app.command("unused")(lambda: None)  # keeps typer from collapsing into a single-command app
    result = CliRunner().invoke(app, ["convert", *map(str, args)])
    return result, " ".join(result.stderr.split())


def test_convert_cli_writes_benchmark_json_and_one_summary_line(tmp_path):
    out = tmp_path / "out" / "test.json"
    xml = write(tmp_path, "rest16.xml", SEMEVAL_2016)
    result, stderr = run_convert(xml, "--task", "atsa", "--out", out, "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["sentences"], summary["aspects"], summary["skipped"]) == (4, 3, 1)
    assert summary["skipped_items"][0]["id"] == "1004293:2"
    assert "skipped 1004293:2: implicit target (NULL)" in stderr
    sentences = read_benchmark_file(out)
    assert sentences[0] == {"ID": "1004293:0", "sentence": sentences[0]["sentence"], "aspects": [
        {"from": "51", "to": "56", "target": "place", "category": "RESTAURANT#GENERAL", "polarity": "negative"}]}
    gold = score_predictions("atsa", sentences, [linearise(s, "atsa") for s in sentences])
    assert gold["f1"] == 1.0 and gold["n_gold"] == 3 and len(sentences) == 4
    assert [p.name for p in out.parent.iterdir()] == ["test.json"]
    human, _ = run_convert(xml, "--task", "atsa", "--out", out)
    assert human.stdout == f"wrote 4 sentences with 3 atsa aspects to {out} (1 skipped)\n"


@pytest.mark.parametrize("case", ["malformed", "latin1", "polarity", "offsets"])
def test_convert_cli_bad_file_exit_2_and_no_output(tmp_path, case):
    content, _ = BAD_FILES[case]
    path = write(tmp_path, f"{case}.xml", content)
    out = tmp_path / "out" / "converted.json"
    out.parent.mkdir()
    result, stderr = run_convert(path, "--task", "atsa", "--out", out)
    assert result.exit_code == 2
    assert str(path) in stderr and "error:" in stderr
    assert list(out.parent.iterdir()) == []
    assert result.stdout == ""


def test_convert_cli_rejects_unknown_task(tmp_path):
    result, _ = run_convert(write(tmp_path, "r.xml", SEMEVAL_2014), "--task", "absa", "--out", tmp_path / "o.json")
    assert result.exit_code == 2 and not (tmp_path / "o.json").exists()


# --------------------------------------------------------------------------- review corpora

def test_jsonl_corpus_uses_the_id_field_or_stem_and_line(tmp_path):
    path = write(tmp_path, "reviews.jsonl", '\ufeff{"id": 17, "text": " Great pho. "}\n\n'
                 '{"text": "Slow service."}\n{"text": ""}\n{"ID": "x", "text": "Ok."}\n')
    assert read_review_corpus(path) == [{"id": "17", "text": "Great pho."}, {"id": "reviews:3", "text": "Slow service."},
                                        {"id": "x", "text": "Ok."}]


def test_jsonl_corpus_with_another_text_field(shared_dir, tmp_path):
    path = write(tmp_path, "mixtral.jsonl", '{"ID": "a1", "Text": "Nice.", "Overall": 5}\n')
    assert read_review_corpus(path, text_field="Text") == [{"id": "a1", "text": "Nice."}]
    real = read_review_corpus(shared_dir / "teacher_outputs" / "mixtral_500.jsonl", text_field="Text")
    assert len(real) == 500 and all(review["id"].isdigit() and review["text"] for review in real)


def test_csv_corpus_ids_follow_physical_lines(tmp_path):
    path = write(tmp_path, "shop.csv", 'text,stars\n"Line one,\nstill one",5\nSecond,3\n')
    assert read_review_corpus(path) == [{"id": "shop:2", "text": "Line one,\nstill one"},
                                        {"id": "shop:4", "text": "Second"}]
    with_ids = write(tmp_path, "ids.csv", "\ufeffid,body\nr1,Good\nr2,Bad\n")
    assert read_review_corpus(with_ids, text_field="body") == [{"id": "r1", "text": "Good"},
                                                               {"id": "r2", "text": "Bad"}]


def test_txt_corpus_is_one_review_per_line(tmp_path):
    path = write(tmp_path, "notes.txt", "First review.\n\n  Third line review.  \n")
    assert read_review_corpus(path) == [{"id": "notes:1", "text": "First review."},
                                        {"id": "notes:3", "text": "Third line review."}]


@pytest.mark.parametrize(("name", "content", "message"), [
    ("bad.jsonl", '{"text": "ok"}\n{"text": \n', "line 2: not valid JSON"),
    ("bad.jsonl", '{"text": "ok"}\n["a"]\n', "line 2: expected a JSON object"),
    ("bad.jsonl", '{"body": "ok"}\n', "line 1: no 'text' field"),
    ("bad.jsonl", '{"text": 5}\n', "line 1: 'text' must be a string"),
    ("bad.csv", "body,stars\nok,5\n", "line 1: no 'text' column"),
    ("bad.txt", b"fine\ncaf\xe9\n", "line 2: not valid UTF-8"),
    ("bad.xlsx", "", "unsupported review file type"),
])
def test_bad_corpora_name_file_and_line(tmp_path, name, content, message):
    path = write(tmp_path, name, content)
    with pytest.raises(InputError, match=message) as caught:
        read_review_corpus(path)
    assert caught.value.path == str(path)


def test_installed_cli_convert_exit_codes(tmp_path):
    good, bad = write(tmp_path, "good.xml", SEMEVAL_2014), write(tmp_path, "bad.xml", BAD_FILES["offsets"][0])
    command = [sys.executable, "-m", "fsa_distill.cli", "data", "convert"]
    done = subprocess.run([*command, str(good), "--task", "acsa", "--out", str(tmp_path / "good.json"), "--json"],
                          check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sentences"] == 3
    done = subprocess.run([*command, str(bad), "--task", "atsa", "--out", str(tmp_path / "bad.json")],
                          check=False, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "sentence id=813" in done.stderr and not (tmp_path / "bad.json").exists()


@pytest.mark.parametrize("encoding", ["utf-8-sig", "utf-16"])
def test_byte_order_marks_are_understood(tmp_path, encoding):
    content = SEMEVAL_2014.replace('encoding="UTF-8"', f'encoding="{encoding.upper().removesuffix("-SIG")}"')
    sentences, _ = convert_semeval_xml(write(tmp_path, "bom.xml", content.encode(encoding)), "atsa")
    assert sentences[1]["sentence"] == "Café au lait — tasty."


def test_reviews_are_cut_to_the_input_budget_as_they_are_read(tmp_path):
    import csv

    from fsa_distill.benchmark.importers import chars_for_tokens, count_cut

    limit = chars_for_tokens(32)
    long_text = "word " * 10_000
    for name, content in [("long.txt", f"short\n{long_text}\n"),
                          ("long.jsonl", json.dumps({"text": "short"}) + "\n" + json.dumps({"text": long_text})),
                          ("long.csv", f'text\nshort\n"{long_text}"\n')]:
        before = csv.field_size_limit()
        reviews = read_review_corpus(write(tmp_path, name, content), max_chars=limit)
        assert csv.field_size_limit() == before, "the process-wide csv limit is put back"
        assert [len(review["text"]) <= limit for review in reviews] == [True, True]
        assert count_cut(reviews) == 1 and reviews[1]["cut_chars"] == len(long_text.strip()) - limit
        assert reviews[0] == {"id": reviews[0]["id"], "text": "short"}
