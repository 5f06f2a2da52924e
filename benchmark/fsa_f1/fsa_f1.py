"""`evaluate` metric for the fine-grained sentiment protocol, loaded from this folder (never from the Hub):

    metric = evaluate.load("/abs/path/to/benchmark/fsa_f1", "atsa")   # or "acsa"
    metric.compute(predictions=outputs, references=split["target"], sentences=split["sentence"])  # ATSA
    metric.compute(predictions=outputs, references=split["target"])                              # ACSA

References are gold target sequences (the `target` column of `benchmark.data.load_split`); the gold pairs are
read from them with the same parser as predictions, which is how `benchmark.scorer` defines gold. ATSA needs the
sentences because a predicted term counts only if it occurs verbatim. For the implicit / multi views, select
the rows with `benchmark.scorer.view_mask` first. Same numbers as `benchmark.scorer.score_predictions`.
"""

import datasets
import evaluate

from fsa_distill.benchmark.scorer import score_pairs
from fsa_distill.benchmark.targets import TASKS, parse_prediction

_CITATION = """\
@article{zhang2024distilling,
  title={Distilling Fine-grained Sentiment Understanding from Large Language Models},
  author={Zhang, Yice and Xu, Guangyu and Lin, Xi and Hao, Ruifeng and Fu, Junqing and Xu, Ruifeng},
  journal={arXiv preprint arXiv:2412.18552},
  year={2024}
}
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions (list of str): raw model outputs, `element | polarity ; element | polarity`.
    references (list of str): gold target sequences, same order.
    sentences (list of str): the review sentences (ATSA only).
Returns:
    precision, recall, f1 (micro over (element, polarity) pairs), n_gold, n_pred, n_sentences.
"""


@evaluate.utils.file_utils.add_start_docstrings(__doc__, _KWARGS_DESCRIPTION)
class FsaF1(evaluate.Metric):
    """Micro P/R/F1 over (aspect term or category, polarity) pairs, per the paper's protocol."""

    def _info(self):
        if self.config_name not in TASKS:
            raise ValueError(f"load fsa_f1 with a task config: one of {list(TASKS)}, e.g. evaluate.load(path, 'atsa')")
        features = {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
        if self.config_name == "atsa":
            features["sentences"] = datasets.Value("string")
        return evaluate.MetricInfo(
            description=__doc__,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(features),
            reference_urls=["https://github.com/HITSZ-HLT/FSA-Distillation"],
        )

    def _compute(self, predictions, references, sentences=None):
        sentences = sentences if sentences is not None else [""] * len(references)
        gold = [parse_prediction(reference, self.config_name, text) for reference, text in zip(references, sentences)]
        predicted = [parse_prediction(output, self.config_name, text) for output, text in zip(predictions, sentences)]
        return score_pairs(gold, predicted)
