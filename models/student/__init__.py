"""The student: build (the pretrained MiniLM-BART, offline T5 sizes or hub checkpoints), load with clear errors, the `[NL]` text convention;
the training toolbox (training.py) and greedy decoding (decoding.py) are imported from their modules (torch)."""

from fsa_distill.models.student.build import SIZES, build_student, student_origin, train_tokenizer
from fsa_distill.models.student.load import check_student_dir, load_student, load_tokenizer, model_digest
from fsa_distill.models.student.text import NL_TOKEN, from_model_text, to_model_text

__all__ = [
    "NL_TOKEN", "SIZES", "build_student", "check_student_dir", "from_model_text", "load_student",
    "load_tokenizer", "model_digest", "student_origin", "to_model_text", "train_tokenizer",
]
