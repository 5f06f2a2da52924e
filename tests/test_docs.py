"""The documentation: the site builds in strict mode (a broken link or a page left out fails), and the README
stays short, with headline numbers that are the committed result files' numbers."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "docs" / "results"


def build_site(root: Path, site: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file",
                           str(root / "mkdocs.yml"), "--site-dir", str(site)],
                          capture_output=True, text=True, timeout=120, cwd=root, check=False)


def test_the_docs_site_builds_in_strict_mode(tmp_path: Path) -> None:
    result = build_site(ROOT, tmp_path / "site")
    assert result.returncode == 0, result.stderr
    for page in ("usage", "operations", "architecture", "benchmarks"):
        assert (tmp_path / "site" / page / "index.html").is_file()


def test_a_broken_link_fails_the_strict_build(tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(ROOT / "docs", copy / "docs")
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    page = copy / "docs" / "usage.md"
    page.write_text(page.read_text(encoding="utf-8") + "\nSee [the missing page](missing.md).\n", encoding="utf-8")
    result = build_site(copy, tmp_path / "site")
    assert result.returncode != 0
    assert "missing.md" in result.stderr


def _figures() -> dict[str, str]:
    """Each README headline figure as the README writes it, computed from the committed result files."""
    def load(name: str) -> dict:
        return json.loads((RESULTS / f"{name}.json").read_text(encoding="utf-8"))

    scorer, teacher, train, serve, scale, quality = (
        load(name) for name in ("scorer", "teacher", "train", "serve", "scale", "quality"))
    rest14 = quality["runs"]["atsa/rest14"]["test_f1_x100"]
    inference = train["inference"]
    tiny = serve["speed"]["t5-tiny"]
    return {
        "scorer": f"**{scorer['seconds']:.1f} s**",
        "quality": f"**{rest14['normal']:.1f}** / {rest14['implicit']:.1f} / {rest14['multi']:.1f}",
        "vllm": f"**{teacher['ratio']:.2f}×** ({teacher['vllm_tokens_per_s']} vs {teacher['hf_tokens_per_s']} tok/s)",
        "padding": f"**{train['pretrain_padding']['ratio']:.2f}×**",
        "student": f"**{inference['ratio']:.1f}×** ({inference['student_reviews_per_s']:.1f} vs "
                   f"{inference['teacher_reviews_per_s']:.1f})",
        "serve": f"**{tiny['ct2_vs_torch']:.2f}×** ({tiny['ctranslate2_int8']['reviews_per_s']:.1f} vs "
                 f"{tiny['torch']['reviews_per_s']:.1f} reviews/s), F1 within "
                 f"{serve['quality']['t5-tiny']['f1_delta_x100']:.2f}",
        "scale": f"peak RSS **{scale['generation']['generation_peak_rss_gib']:.2f} GiB**",
        "http": "**{:.1f}** / {:.1f} / {:.1f} requests/s, p50 {:,.0f} / {:,.0f} / {:,.0f} ms".format(
            *(serve["http"]["levels"][level]["requests_per_s"] for level in ("1", "4", "16")),
            *(serve["http"]["levels"][level]["p50_ms"] for level in ("1", "4", "16"))),
    }


def test_the_readme_is_short_and_its_headline_numbers_are_the_result_files(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    benchmarks = (ROOT / "docs" / "benchmarks.md").read_text(encoding="utf-8")
    assert len(readme.encode("utf-8")) <= 12 * 1024
    start, end = readme.index("<!-- headline-numbers: start"), readme.index("<!-- headline-numbers: end")
    headline = readme[start:end]
    for name, figure in _figures().items():
        assert figure in headline, f"README's {name} figure should read {figure}"
        number = figure.split("**")[1]
        assert number in benchmarks, f"docs/benchmarks.md lacks the {name} figure {number}"


def test_the_readme_study_table_is_the_committed_study() -> None:
    """Each arm's README row: test F1 per dataset (mean ± std over seeds), their mean, and its gain over A."""
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    study = json.loads((RESULTS / "study.json").read_text(encoding="utf-8"))
    for arm, results in study["arms"].items():
        cells = [f"{results['f1'][d]['normal']['mean']:.1f} ± {results['f1'][d]['normal']['std']:.1f}"
                 for d in study["datasets"]] + [f"{results['f1_normal_mean']:.1f}"]
        if arm in study["delta_vs_A"]:
            delta = study["delta_vs_A"][arm]
            cells.append("{:+.1f} [{:+.1f}, {:+.1f}]".format(delta["mean"], *delta["ci95"]).replace("-", "−"))
        row = "| " + " | ".join(cells) + " |"
        assert row in readme, f"README's study row for arm {arm} should contain {row}"
