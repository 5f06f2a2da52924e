"""The student: build (offline T5 sizes or hub checkpoints), load with clear errors, `[NL]` text convention."""

from fsa_distill.models.student.build import (
    NL_TOKEN,
    SIZES,
    build_student,
    from_model_text,
    to_model_text,
    train_tokenizer,
)
from fsa_distill.models.student.load import check_student_dir, load_student, load_tokenizer, model_digest

__all__ = [
    "NL_TOKEN", "SIZES", "build_student", "check_student_dir", "from_model_text", "load_student",
    "load_tokenizer", "model_digest", "to_model_text", "train_tokenizer",
]
