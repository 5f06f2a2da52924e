"""The generation settings of issue #11: engine, Ray address from the environment, store URL without password."""

from __future__ import annotations

from fsa_distill.core.config import resolve_config


def test_ray_address_comes_from_the_environment_unless_configured() -> None:
    assert resolve_config("demo", environ={}).generation.ray_address is None
    assert resolve_config("demo", environ={"RAY_ADDRESS": "ray://head:10001"}).generation.ray_address == \
        "ray://head:10001"
    configured = resolve_config("demo", overrides=["generation.ray_address=ray://other:10001"],
                                environ={"RAY_ADDRESS": "ray://head:10001"})
    assert configured.generation.ray_address == "ray://other:10001"


def test_paper_profile_runs_the_teacher_on_ray_replicas() -> None:
    config = resolve_config("paper", environ={})
    assert (config.generation.engine, config.teacher.replicas, config.teacher.tensor_parallel_size) == ("ray", 4, 2)
    assert resolve_config("demo", environ={}).generation.engine == "local"


def test_store_url_password_stays_out_of_json_copies() -> None:
    config = resolve_config("demo", overrides=["generation.cache_url=postgresql://fsa:hunter2@db:5432/answers"],
                            environ={})
    assert config.generation.cache_url == "postgresql://fsa:hunter2@db:5432/answers"  # the run itself connects
    assert "hunter2" not in config.model_dump_json() and "hunter2" not in config.digest("generation")
