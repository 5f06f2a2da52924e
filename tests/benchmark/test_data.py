"""Benchmark folder resolution, the verified download (against a local HTTP server) and loading."""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from fsa_distill.benchmark.data import (
    auxiliary_train,
    checksums,
    download_benchmark,
    features,
    load_sentences,
    load_split,
    load_task_data,
    raw_base_url,
    read_benchmark_file,
    resolve_data_dir,
)
from fsa_distill.benchmark.targets import linearise, marked_source
from fsa_distill.core.config import DataConfig
from fsa_distill.core.errors import InputError

SIZES = {  # sentences per split, from ../shared/README.md
    "atsa/rest14": {"train": 2432, "dev": 609, "test": 800, "hard_test": 340},
    "atsa/laptop14": {"train": 2436, "dev": 609, "test": 800, "hard_test": 237},
    "acsa/rest16": {"train": 1600, "dev": 400, "test": 676, "hard_test": 340},
    "acsa/laptop16": {"train": 2000, "dev": 500, "test": 808, "hard_test": 237},
}
TWO_FILES = ["atsa/rest14/dev.json", "acsa/laptop16/hard_test.json"]


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep pytest output clean
        pass


@pytest.fixture
def serve():
    """Serve a folder on 127.0.0.1 (stands in for raw.githubusercontent.com); returns its base URL."""
    servers = []

    def start(folder: Path) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=str(folder)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def copy_files(source: Path, target: Path, names: list[str]) -> Path:
    for name in names:
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / name, target / name)
    return target


# --------------------------------------------------------------------------- checksums and download

def test_checksums_match_the_shared_copy_and_pin_the_upstream_commit(benchmark_dir):
    pinned = checksums()
    assert pinned["commit"] == "c38bdfc80cf871ffd53e14f9441fcc33d968defd"
    assert len(pinned["files"]) == 16
    for name, expected in pinned["files"].items():
        data = (benchmark_dir / name).read_bytes()
        assert hashlib.sha256(data).hexdigest() == expected["sha256"] and len(data) == expected["bytes"]
    assert raw_base_url() == ("https://raw.githubusercontent.com/HITSZ-HLT/FSA-Distillation/"
                              "c38bdfc80cf871ffd53e14f9441fcc33d968defd/fsa_datasets/w_hard")


def test_download_verifies_and_writes_files(benchmark_dir, tmp_path, serve):
    url = serve(copy_files(benchmark_dir, tmp_path / "upstream", TWO_FILES))
    dest = download_benchmark(tmp_path / "data" / "fsa_datasets", base_url=url, names=TWO_FILES)
    for name in TWO_FILES:
        assert (dest / name).read_bytes() == (benchmark_dir / name).read_bytes()
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["fsa_datasets"]  # no staging left behind


def test_digest_mismatch_is_a_clear_error_and_nothing_is_kept(benchmark_dir, tmp_path, serve):
    upstream = copy_files(benchmark_dir, tmp_path / "upstream", TWO_FILES)
    tampered = upstream / TWO_FILES[1]
    tampered.write_bytes(tampered.read_bytes().replace(b"positive", b"negative", 1))
    url = serve(upstream)
    with pytest.raises(InputError, match="SHA-256 mismatch") as caught:
        download_benchmark(tmp_path / "data" / "fsa_datasets", base_url=url, names=TWO_FILES)
    assert caught.value.path == f"{url}/{TWO_FILES[1]}"
    assert list((tmp_path / "data").iterdir()) == []  # the good first file was not kept either


def test_missing_file_upstream_is_a_clear_error(tmp_path, serve):
    url = serve(tmp_path)
    with pytest.raises(InputError, match="HTTP 404"):
        download_benchmark(tmp_path / "dl", base_url=url, names=TWO_FILES[:1])
    assert not (tmp_path / "dl").exists()


def test_resolve_downloads_when_no_local_copy(benchmark_dir, tmp_path, serve):
    url = serve(benchmark_dir)
    folder = resolve_data_dir(local_dirs=[tmp_path / "absent"], download_to=tmp_path / "dl", base_url=url)
    assert folder == tmp_path / "dl"
    assert len(load_sentences("acsa", "rest16", "test", folder)) == 676 + 340
    # a second resolution finds the complete copy instead of downloading again
    assert resolve_data_dir(local_dirs=[tmp_path / "dl"], base_url="http://127.0.0.1:9") == tmp_path / "dl"


# --------------------------------------------------------------------------- resolution order

def test_explicit_folder_wins_then_the_environment(tmp_path):
    explicit, from_env = tmp_path / "explicit", tmp_path / "env"
    explicit.mkdir()
    from_env.mkdir()
    assert resolve_data_dir(explicit, {"FSA_DATA_DIR": str(from_env)}) == explicit
    assert resolve_data_dir(None, {"FSA_DATA_DIR": str(from_env)}) == from_env
    with pytest.raises(InputError, match="benchmark folder not found"):
        resolve_data_dir(tmp_path / "missing")


def test_process_environment_is_not_read_unless_handed_in(benchmark_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("FSA_DATA_DIR", str(tmp_path / "missing"))
    assert resolve_data_dir(local_dirs=[benchmark_dir]) == benchmark_dir


def test_local_folders_in_order_and_only_when_complete(benchmark_dir, tmp_path, monkeypatch):
    """Both folders are looked for from the working directory only, never from the installed package."""
    here = tmp_path / "here"
    partial = copy_files(benchmark_dir, here / "data" / "fsa_datasets", TWO_FILES)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "fsa_datasets").symlink_to(benchmark_dir)
    monkeypatch.chdir(here)
    # ./data/fsa_datasets is incomplete, so ../shared/fsa_datasets beside the working directory is used
    assert resolve_data_dir().resolve() == benchmark_dir.resolve()
    copy_files(benchmark_dir, partial, list(checksums()["files"]))
    assert resolve_data_dir().resolve() == partial.resolve()


# --------------------------------------------------------------------------- loading

@pytest.mark.parametrize("name", list(SIZES))
def test_split_sizes_and_test_is_test_then_hard_test(benchmark_dir, name):
    task, dataset = name.split("/")
    sizes = SIZES[name]
    for split in ("train", "dev", "hard_test"):
        assert len(load_sentences(task, dataset, split, benchmark_dir)) == sizes[split]
    test = load_sentences(task, dataset, "test", benchmark_dir)
    assert len(test) == sizes["test"] + sizes["hard_test"]
    assert test[sizes["test"]:] == load_sentences(task, dataset, "hard_test", benchmark_dir)


def test_files_with_a_byte_order_mark_are_read(benchmark_dir):
    assert (benchmark_dir / "atsa/rest14/test.json").read_bytes().startswith(b"\xef\xbb\xbf")
    assert read_benchmark_file(benchmark_dir / "atsa/rest14/test.json")[0]["sentence"] == (
        "The bread is top notch as well.")


def test_load_split_has_an_explicit_schema_and_the_linearised_target(benchmark_dir):
    split = load_split("atsa", "rest14", "test", benchmark_dir)
    assert split.features == features()
    assert split.column_names == ["id", "sentence", "aspects", "target"]
    assert len(split) == 1140
    raw = load_sentences("atsa", "rest14", "test", benchmark_dir)
    assert split["target"] == [linearise(sentence, "atsa") for sentence in raw]
    first, hard = split[0], split[800]
    assert first["aspects"][0] == {"from": "4", "to": "9", "target": "bread", "category": None,
                                   "polarity": "positive", "opinion_words": ["top notch"]}
    # hard_test: int offsets become strings; {from, to, opinion} opinion words become their text
    assert all(a["from"] is None or a["from"].isdigit() for a in hard["aspects"])
    words = [w for row in split.select(range(800, 1140)) for a in row["aspects"] for w in a["opinion_words"]]
    assert words and all(isinstance(word, str) for word in words)


def test_load_split_of_acsa(benchmark_dir):
    split = load_split("acsa", "laptop16", "dev", benchmark_dir)
    assert len(split) == 500 and split[0]["target"] == linearise(
        load_sentences("acsa", "laptop16", "dev", benchmark_dir)[0], "acsa")


def test_auxiliary_train_skips_the_dataset_itself_and_its_dev_and_test_sentences(benchmark_dir):
    data = DataConfig(data_dir=benchmark_dir)
    own = load_task_data("atsa", "rest14", data)
    held_out = own["dev"] + own["test"]
    pairs = auxiliary_train("atsa", "rest14", ["atsa/rest14", "acsa/rest16"], data, held_out)
    rest16_train = load_sentences("acsa", "rest16", "train", benchmark_dir)
    assert {task for task, _ in pairs} == {"acsa"}
    # 213 of rest16's 1,600 train sentences are rest14 dev or test sentences (SemEval reuses restaurant reviews)
    assert len(pairs) == 1387 and len(rest16_train) - len(pairs) == 213
    unseen = {sentence["sentence"].strip().lower() for sentence in held_out}
    assert not [s for _, s in pairs if s["sentence"].strip().lower() in unseen]
    assert marked_source(pairs[0][1]["sentence"], "acsa") == "aspect categories: " + pairs[0][1]["sentence"]
    limited = auxiliary_train("atsa", "rest14", ["acsa/rest16"], DataConfig(data_dir=benchmark_dir,
                                                                           max_train_sentences=10), held_out)
    assert [s for _, s in limited] == [s for s in rest16_train[:10] if s["sentence"].strip().lower() not in unseen]


def test_bad_files_name_the_problem(tmp_path):
    folder = tmp_path / "atsa" / "mine"
    folder.mkdir(parents=True)
    (folder / "dev.json").write_text('[{"ID": "1", "sentence": "ok", "aspects": []},\n  {"ID": 2,]',
                                     encoding="utf-8")
    with pytest.raises(InputError, match="line 2 column") as caught:
        load_sentences("atsa", "mine", "dev", tmp_path)
    assert caught.value.path == str(folder / "dev.json")
    (folder / "dev.json").write_text(json.dumps([{"ID": "7", "sentence": "x", "aspects": [{"target": "x"}]}]))
    with pytest.raises(InputError, match=r"item 0 \(ID=7\).*polarity"):
        load_sentences("atsa", "mine", "dev", tmp_path)
    with pytest.raises(InputError, match="benchmark file not found"):
        load_sentences("atsa", "mine", "test", tmp_path)
    with pytest.raises(ValueError, match="unknown split"):
        load_sentences("atsa", "mine", "validation", tmp_path)
