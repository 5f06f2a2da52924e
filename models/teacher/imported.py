"""A teacher whose answers were produced elsewhere (the paper's released corpus, an API batch job) and put into the
answer store by `fsa-distill cache import`. It never generates: a run configured with it (`teacher.backend:
imported`, `teacher.model: <the id given at import>`) finds every answer cached, and a request whose answer was
never imported is an error that says so, not a silent gap in the corpus."""

from __future__ import annotations

from typing import Any

from fsa_distill.models.teacher.base import GenerationRequest, TeacherAnswer, TeacherBackend, TeacherError

IMPORTED_WEIGHTS = "imported"


class ImportedTeacher(TeacherBackend):
    """Identity only: `model_id` is the declared teacher id; token counts are the base class's estimate."""

    def __init__(self, teacher_id: str, max_model_len: int = 2048) -> None:
        self.model_id = teacher_id
        self.weights_digest = IMPORTED_WEIGHTS
        self.max_model_len = max_model_len

    def sampling_key(self, request: GenerationRequest) -> dict[str, Any]:
        """An imported answer exists once, whatever sampling settings the run that reads it has configured."""
        return {}

    def generate(self, requests: list[GenerationRequest]) -> list[TeacherAnswer]:
        if not requests:
            return []
        raise TeacherError(
            f"{len(requests)} answer(s) of the imported teacher {self.model_id!r} are not in the answer store: "
            "import them with `fsa-distill cache import FILE --teacher-id "
            f"{self.model_id}` (same work dir), or leave those reviews out of the run"
        )
