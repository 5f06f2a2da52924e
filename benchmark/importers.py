"""Importers for data users bring: SemEval ABSA XML → benchmark JSON, and plain review corpora → [{id, text}].

SemEval-2014 Task 4:  <sentences><sentence id><text/><aspectTerms><aspectTerm term polarity from to/>
                      <aspectCategories><aspectCategory category polarity/></sentence></sentences>
SemEval-2015/2016:    <Reviews><Review rid><sentences><sentence id><text/><Opinions>
                      <Opinion target category polarity from to/></Opinions></sentence>...</Reviews>

The root says where the sentences are; each sentence's own children say which markup its aspects use. A file
mixing the two markups (or with sentences outside its root's layout) is an error, never aspects silently lost.
Every problem is an InputError naming the file and the element (`sentence id=...`) or line, because users fix
their files from that message.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any
from xml.etree import ElementTree
from xml.parsers.expat import ErrorString

import defusedxml.ElementTree as SafeElementTree
from defusedxml import DefusedXmlException

from fsa_distill.benchmark.targets import IMPLICIT_TARGETS, POLARITIES, check_task
from fsa_distill.core.errors import InputError
from fsa_distill.core.text_budget import chars_for_tokens, cut_text  # noqa: F401 - callers import it here


def jsonl_values(path: Path, lines: Iterable[str]) -> Iterator[tuple[int, Any]]:
    """(line number, parsed value) for each non-blank JSONL line; a broken line is an InputError naming it."""
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(path, f"line {number}", f"not valid JSON ({error.msg})") from None
        except RecursionError:
            raise InputError(path, f"line {number}", "JSON nested too deeply") from None


CORPUS_SUFFIXES = (".jsonl", ".ndjson", ".csv", ".txt")
ID_FIELDS = ("id", "ID")
_ENCODING_DECLARATION = re.compile(rb"""^(?:\xef\xbb\xbf)?<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


# ---------------------------------------------------------------- SemEval XML


def _parse_xml(path: Path) -> ElementTree.Element:
    """Parse with ElementTree (it honours the XML encoding declaration) and explain failures with line numbers."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError(path, None, "file not found") from None
    declared = _ENCODING_DECLARATION.match(data)
    utf16 = data.startswith((b"\xff\xfe", b"\xfe\xff"))  # a byte-order mark tells the parser the encoding
    if not utf16 and (declared is None or declared.group(1).lower().replace(b"_", b"-") in (b"utf-8", b"utf8")):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as error:
            line = data[: error.start].count(b"\n") + 1
            raise InputError(path, f"line {line}", f"not valid UTF-8 (byte {data[error.start]:#04x} at offset "
                             f"{error.start}); re-save the file as UTF-8 or declare its encoding in the XML "
                             "header") from None
    try:
        # defusedxml: DTDs, entity declarations (billion laughs, quadratic blow-up) and external entities are
        # refused outright instead of relying on expat's amplification limits. SemEval files declare none.
        return SafeElementTree.fromstring(data, forbid_dtd=True)
    except DefusedXmlException as error:
        raise InputError(path, None, f"refused: the XML declares a DTD, entities or external references "
                         f"({error}); SemEval files need none") from None
    except ElementTree.ParseError as error:
        line, column = error.position
        raise InputError(path, f"line {line} column {column + 1}", f"malformed XML ({ErrorString(error.code)})") from None


def _offsets(path: Path, where: str, element: ElementTree.Element, text: str, term: str) -> tuple[str, str]:
    """Check `from`/`to` against the sentence text; offsets are kept as strings, like the benchmark files."""
    raw_from, raw_to = element.get("from"), element.get("to")
    label = f"{element.tag} term={term!r}"
    try:
        start, end = int(raw_from), int(raw_to)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise InputError(path, where, f"{label}: from={raw_from!r} to={raw_to!r} are not integer offsets") from None
    if not 0 <= start <= end <= len(text) or text[start:end] != term:
        raise InputError(path, where, f"{label}: offsets from={start} to={end} select {text[start:end]!r} in the "
                         f"text, not the term")
    return str(start), str(end)


def _polarity(path: Path, where: str, element: ElementTree.Element) -> str:
    polarity = element.get("polarity")
    if polarity not in POLARITIES:
        raise InputError(path, where, f"{element.tag}: unknown polarity {polarity!r}; expected one of "
                         f"{list(POLARITIES)}")
    return polarity


def _aspects_2014(path: Path, where: str, sentence: ElementTree.Element, text: str, task: str) -> list[dict]:
    aspects = []
    if task == "atsa":
        for term_element in sentence.iterfind("aspectTerms/aspectTerm"):
            term = term_element.get("term")
            if term is None:
                raise InputError(path, where, "aspectTerm without a term attribute")
            polarity = _polarity(path, where, term_element)
            start, end = _offsets(path, where, term_element, text, term)
            aspects.append({"from": start, "to": end, "target": term, "category": None, "polarity": polarity})
    else:
        for category_element in sentence.iterfind("aspectCategories/aspectCategory"):
            category = category_element.get("category")
            if not category:
                raise InputError(path, where, "aspectCategory without a category attribute")
            polarity = _polarity(path, where, category_element)
            aspects.append({"from": None, "to": None, "target": None, "category": category, "polarity": polarity})
    return aspects


def _aspects_2016(path: Path, where: str, sentence: ElementTree.Element, text: str, task: str) -> list[dict]:
    """All opinions of a sentence; explicit targets get their offsets checked, whatever the task."""
    aspects = []
    for opinion in sentence.iterfind("Opinions/Opinion"):
        polarity = _polarity(path, where, opinion)
        target, category = opinion.get("target"), opinion.get("category")
        if task == "acsa" and not category:
            raise InputError(path, where, "Opinion without a category attribute")
        start, end = opinion.get("from"), opinion.get("to")
        if target not in IMPLICIT_TARGETS:
            start, end = _offsets(path, where, opinion, text, target)
        aspects.append({"from": start, "to": end, "target": target, "category": category, "polarity": polarity})
    return aspects


_MARKUP = {2014: ("aspectTerms", "aspectCategories"), 2016: ("Opinions",)}


def _markup(path: Path, where: str, sentence: ElementTree.Element) -> int | None:
    """Which SemEval markup a sentence's aspects are written in (None: it has none). Read from the sentence
    itself, not from the root: a file's root says where its sentences are, and nothing about their aspects."""
    years = [year for year, tags in _MARKUP.items() if any(sentence.find(tag) is not None for tag in tags)]
    if len(years) > 1:
        raise InputError(path, where, "mixes SemEval-2014 (<aspectTerms>, <aspectCategories>) and 2015/2016 "
                         "(<Opinions>) markup in one sentence; keep one")
    return years[0] if years else None


def _sentence_elements(path: Path, root: ElementTree.Element) -> list[ElementTree.Element]:
    """The sentences where the root's format keeps them; a <sentence> anywhere else is an error, never dropped."""
    if root.tag == "sentences":
        found = root.findall("sentence")
    elif root.tag == "Reviews":
        found = root.findall("Review/sentences/sentence")
    else:
        raise InputError(path, f"<{root.tag}>", "root element is neither <sentences> (SemEval-2014) nor "
                         "<Reviews> (SemEval-2015/2016)")
    if len(found) != sum(1 for _ in root.iter("sentence")):
        kept = {id(element) for element in found}
        stray = next(element for element in root.iter("sentence") if id(element) not in kept)
        layout = "<sentences><sentence>" if root.tag == "sentences" else "<Reviews><Review><sentences><sentence>"
        raise InputError(path, f"sentence id={stray.get('id')}", f"outside {layout}, where a <{root.tag}> file "
                         "keeps its sentences; it would be lost (a file mixing SemEval-2014 and 2015/2016 "
                         "layouts?)")
    return found


def convert_semeval_xml(path: Path, task: str) -> tuple[list[dict[str, Any]], list[dict[str, str]]]:
    """Convert a SemEval-2014 or 2015/2016 ABSA XML file into benchmark sentences for `task`.

    Every sentence is kept, also one without an aspect for the task (`"aspects": []`), in every format and for
    both tasks: the benchmark keeps them (a third of rest14's training sentences), and a model trained without
    them never learns to answer "nothing here". Returns (sentences, skipped); skipped items are {"id", "reason"}
    for what could not be used: implicit (NULL) targets, which are not ATSA aspects.
    """
    check_task(task)
    path = Path(path)
    sentences: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    file_markup: tuple[int, str] | None = None  # (year, where first seen): one markup per file
    for index, element in enumerate(_sentence_elements(path, _parse_xml(path))):
        sentence_id = element.get("id")
        where = f"sentence id={sentence_id}" if sentence_id else f"sentence #{index + 1} (no id attribute)"
        text = element.findtext("text")
        if text is None:
            raise InputError(path, where, "no <text> element")
        year = _markup(path, where, element)
        if year is not None and file_markup is not None and year != file_markup[0]:
            raise InputError(path, where, f"SemEval-{year} markup (<{'>, <'.join(_MARKUP[year])}>) in a file whose "
                             f"{file_markup[1]} uses SemEval-{file_markup[0]} markup; a mixed file's aspects and "
                             "categories do not fit one dataset: convert each part on its own")
        file_markup = file_markup or ((year, where) if year is not None else None)
        if year == 2016:
            aspects = _aspects_2016(path, where, element, text, task)
        else:  # 2014 markup, or a sentence without aspects
            aspects = _aspects_2014(path, where, element, text, task)
        if task == "atsa":
            for aspect in aspects:
                if aspect["target"] in IMPLICIT_TARGETS:
                    skipped.append({"id": sentence_id or f"#{index + 1}", "reason": "implicit target (NULL) of "
                                    f"category {aspect['category']!r}: not an ATSA aspect"})
            aspects = [aspect for aspect in aspects if aspect["target"] not in IMPLICIT_TARGETS]
        sentences.append({"ID": sentence_id or f"{path.stem}:{index + 1}", "sentence": text, "aspects": aspects})
    return sentences, skipped


# ---------------------------------------------------------------- review corpora

# Reviews are cut to the model's input budget as they are read (core/text_budget.py says why and how).
# The csv module refuses fields over 131,072 characters by default; a long review is valid input. 2**31 - 1 is
# the largest limit every platform's C long accepts (sys.maxsize overflows on Windows).
CSV_FIELD_LIMIT = 2**31 - 1


@contextmanager
def _csv_field_limit(limit: int) -> Iterator[None]:
    """Raise the csv module's (process-wide) field limit for one read and put the old one back."""
    previous = csv.field_size_limit()
    csv.field_size_limit(max(previous, limit))
    try:
        yield
    finally:
        csv.field_size_limit(previous)


def _record_id(record: dict[str, Any], fallback: str) -> str:
    for field in ID_FIELDS:
        if record.get(field) not in (None, ""):
            return str(record[field])
    return fallback


def _text(path: Path, where: str, record: dict[str, Any], text_field: str) -> str:
    if text_field not in record:
        raise InputError(path, where, f"no {text_field!r} field (fields: {sorted(map(str, record))}); pass "
                         "text_field")
    value = record[text_field]
    if value is not None and not isinstance(value, str):
        raise InputError(path, where, f"{text_field!r} must be a string, got {type(value).__name__}")
    if value and "\x00" in value:
        raise InputError(path, where, "NUL byte in the review text; the file is probably binary or corrupt")
    return (value or "").strip()


def _numbered_lines(path: Path, handle: IO[bytes]) -> Iterator[tuple[int, str]]:
    """(line number, decoded line) read lazily from a binary file; each line is decoded on its own, so a
    decoding error names its line (a text-mode reader decodes 8 KiB blocks ahead of the lines it returns)."""
    for number, raw in enumerate(handle, start=1):
        if number == 1 and raw.startswith(b"\xef\xbb\xbf"):
            raw = raw[3:]
        nul = raw.find(b"\x00")
        if nul >= 0:
            raise InputError(path, f"line {number}", f"NUL byte at byte {nul + 1} of the line; the file is "
                             "binary or corrupt, not UTF-8 text")
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            raise InputError(path, f"line {number}", f"not valid UTF-8 ({error.reason}); re-save the file as "
                             "UTF-8") from None
        yield number, line


def _txt_reviews(path: Path, handle: IO[bytes]) -> Iterator[tuple[str, str, str]]:
    for number, line in _numbered_lines(path, handle):
        yield f"line {number}", f"{path.stem}:{number}", _text(path, f"line {number}", {"text": line}, "text")


def _jsonl_reviews(path: Path, handle: IO[bytes], text_field: str) -> Iterator[tuple[str, str, str]]:
    for number, line in _numbered_lines(path, handle):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as error:
            raise InputError(path, f"line {number}", f"not valid JSON ({error.msg})") from None
        except RecursionError:
            raise InputError(path, f"line {number}", "JSON nested too deeply") from None
        if not isinstance(record, dict):
            raise InputError(path, f"line {number}", "expected a JSON object")
        where = f"line {number}"
        yield where, _record_id(record, f"{path.stem}:{number}"), _text(path, where, record, text_field)


def _csv_reviews(path: Path, handle: IO[bytes], text_field: str) -> Iterator[tuple[str, str, str]]:
    """Records of a CSV file with the line each starts on (csv.reader counts physical lines; blank lines come
    back as empty rows, so the count stays right after them). strict=True turns an unbalanced quote, which
    would otherwise silently swallow the following rows, into an error."""
    lines = (line for _, line in _numbered_lines(path, handle))
    reader = csv.reader(lines, strict=True)
    header: list[str] | None = None
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            if "end of data" in str(error):
                problem = "a quoted field opened here is never closed (unbalanced quote)"
            elif "new-line character" in str(error):
                problem = ("a line break (CR) inside an unquoted field: save the file with LF or CRLF line "
                           "endings, and quote fields that contain line breaks")
            else:
                problem = f"malformed CSV at line {reader.line_num} ({error}): probably an unbalanced quote"
            raise InputError(path, f"line {start}", problem) from None
        if not row:
            continue  # a blank line
        if header is None:
            header = row
            if text_field not in header:
                raise InputError(path, f"line {start}", f"no {text_field!r} column (columns: {header}); "
                                 "pass text_field")
            continue
        where = f"line {start}"
        record = dict(zip(header, row))
        yield where, _record_id(record, f"{path.stem}:{start}"), _text(path, where, record, text_field)
    if header is None:
        raise InputError(path, "line 1", f"no {text_field!r} column (the file is empty); pass text_field")


def read_review_corpus(path: Path, text_field: str = "text", *, max_chars: int | None = None,
                       keep_blank: bool = False) -> list[dict[str, Any]]:
    """Reviews from a JSONL / CSV / TXT file as [{id, text}] (see `iter_review_corpus`)."""
    return list(iter_review_corpus(path, text_field, max_chars=max_chars, keep_blank=keep_blank))


def iter_review_corpus(path: Path, text_field: str = "text", *, max_chars: int | None = None,
                       keep_blank: bool = False) -> Iterator[dict[str, Any]]:
    """Reviews from a JSONL / CSV / TXT file, one {id, text} at a time; ids are the record's id field if
    present, else `<file stem>:<line>`, so they stay stable when the file grows. Blank reviews are left out,
    unless `keep_blank` (prediction: one output per input record): then a JSONL / CSV record whose text is
    empty or null comes back with text "" (a blank line is no record, in any format).

    The file is read line by line and each review is cut to `max_chars` characters as it is read (see
    `chars_for_tokens`); a cut review carries `cut_chars`, the number of characters dropped. A bad line raises
    `InputError` when it is reached.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in CORPUS_SUFFIXES:
        raise InputError(path, None, f"unsupported review file type {suffix!r}; use one of {list(CORPUS_SUFFIXES)}")
    try:
        handle = open(path, "rb")  # noqa: SIM115 - closed below, after the last review was yielded
    except FileNotFoundError:
        raise InputError(path, None, "file not found") from None
    with handle, _csv_field_limit(CSV_FIELD_LIMIT):
        if suffix == ".txt":
            records = _txt_reviews(path, handle)
        elif suffix == ".csv":
            records = _csv_reviews(path, handle, text_field)
        else:
            records = _jsonl_reviews(path, handle, text_field)
        for _, review_id, text in records:
            if not text and not (keep_blank and suffix != ".txt"):
                continue
            if max_chars is not None and len(text) > max_chars:
                yield {"id": review_id, "text": cut_text(text, max_chars), "cut_chars": len(text) - max_chars}
            else:
                yield {"id": review_id, "text": text}


def count_cut(reviews: Iterable[dict[str, Any]]) -> int:
    """How many reviews `read_review_corpus` cut to the input budget."""
    return sum("cut_chars" in review for review in reviews)
