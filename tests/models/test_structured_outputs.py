"""Structured outputs (`generation.structured_outputs`): the analysis regex, where it is sent, and the answer keys
it changes (only when on, so answers stored before the option existed keep their keys)."""

from __future__ import annotations

import re
from pathlib import Path

from fsa_distill.core.config import DistillConfig
from fsa_distill.models.teacher.openai_backend import OpenAIBackend
from fsa_distill.models.teacher.prompts import ANSWER_FORMATS, load_prompt
from fsa_distill.tasks.stages.generate import GenerateSettings, build_jobs
from fsa_distill.tasks.stages.validation import parse_opinion_targets
from tests.teacher_fixtures import FakeTeacher

ANSWER = ('Opinion Target 1: "pizza"\nAspect: "taste"\nSentiment: strongly positive\nReasoning: The reviewer calls '
          'it wonderful.\n\nOpinion Target 2: "waiter"\nAspect: "attentiveness"\nSentiment: negative\n'
          'Reasoning: We were ignored.')


def test_the_regex_takes_the_analysis_format_and_nothing_else() -> None:
    regex = re.compile(ANSWER_FORMATS["analysis"])
    assert regex.fullmatch(ANSWER) and parse_opinion_targets(ANSWER) == ["pizza", "waiter"]
    assert not regex.fullmatch("Sure! Here is the analysis:\n\n" + ANSWER)
    assert not regex.fullmatch(ANSWER.replace("strongly positive", "great"))
    assert not regex.fullmatch("\n\n".join([ANSWER] * 5))  # at most 8 blocks: a model cannot loop forever


class _VLLMLikeTeacher(FakeTeacher):
    supports_structured_outputs = True


def _jobs(tmp_path: Path, teacher: FakeTeacher, structured: bool) -> dict[str, object]:
    config = DistillConfig(work_dir=tmp_path)
    config.generation.structured_outputs = structured
    prompts = [load_prompt("analysis"), load_prompt("rewrite")]
    return {job.prompt.name: job for job in build_jobs([("r1", "The pizza was great.")], prompts,
                                                       GenerateSettings.of(config), teacher)}


def test_only_supporting_backends_get_the_regex_and_only_when_on(tmp_path: Path) -> None:
    off = _jobs(tmp_path, _VLLMLikeTeacher(), structured=False)
    on = _jobs(tmp_path, _VLLMLikeTeacher(), structured=True)
    assert on["analysis"].request.regex == ANSWER_FORMATS["analysis"] and on["rewrite"].request.regex is None
    assert off["analysis"].request.regex is None and "regex" not in off["analysis"].request.sampling_key()
    assert on["analysis"].key != off["analysis"].key and on["rewrite"].key == off["rewrite"].key
    unsupported = _jobs(tmp_path, FakeTeacher(), structured=True)  # e.g. HF generate: asked, and keyed, as before
    assert unsupported["analysis"].request.regex is None and unsupported["analysis"].key == off["analysis"].key


def test_openai_compatible_requests_carry_the_regex(tmp_path: Path, flaky_server) -> None:
    """What goes over the wire: the openai client sends `extra_body` as top-level fields, where vLLM reads them."""
    job = _jobs(tmp_path, _VLLMLikeTeacher(), structured=True)["analysis"]
    server = flaky_server([])
    with OpenAIBackend(server.base_url, model="served") as backend:
        backend.generate([job.request])
    [sent] = server.requests
    assert sent["path"] == "/v1/chat/completions"
    assert sent["body"]["structured_outputs"] == {"regex": ANSWER_FORMATS["analysis"]}
