"""How trainings share a CPU host (`execution.schedule`) and the time budget's deadline."""

from __future__ import annotations

import pytest

from compare_models.config import ExecutionParams, RunParams
from compare_models.jobs import AUTO_SCHEDULE, plan_jobs, resolve_schedule, thread_plan
from tests.conftest import placeholder_dataset

MODELS = ("cnn", "resnet50")


def test_thread_plans():
    assert thread_plan(MODELS, "parallel", 2) == {"cnn": 1, "resnet50": 1}
    assert thread_plan(MODELS, "sequential", 2) == {"cnn": 2, "resnet50": 2}
    assert thread_plan(MODELS, "weighted", 2) == {
        "cnn": 1,
        "resnet50": 2,
    }  # ResNet50 costs ~5x per image
    assert thread_plan(MODELS, "weighted", 12) == {"cnn": 2, "resnet50": 10}
    assert thread_plan(("cnn",), "parallel", 8) == {"cnn": 8}


def test_deployment_trainings_always_run_at_once():
    assert (
        resolve_schedule(ExecutionParams(trainer="deployment", schedule="sequential")) == "parallel"
    )
    assert resolve_schedule(ExecutionParams(schedule="auto")) == AUTO_SCHEDULE
    assert resolve_schedule(ExecutionParams(schedule="weighted")) == "weighted"
    with pytest.raises(ValueError, match="schedule"):
        ExecutionParams(schedule="round-robin")


def test_jobs_carry_threads_and_the_budget_deadline():
    params = RunParams.model_validate(
        {"execution": {"schedule": "parallel", "time_budget_minutes": 2}}
    )
    jobs = plan_jobs(params, "r1", placeholder_dataset(), None, started_at=1000.0)
    assert [j.deadline for j in jobs] == [1120.0, 1120.0]
    assert all(j.threads >= 1 for j in jobs)
    assert (
        plan_jobs(RunParams(), "r1", placeholder_dataset(), None, started_at=0.0)[0].deadline
        is None
    )
    on_workers = RunParams.model_validate({"execution": {"trainer": "deployment"}})
    assert [
        j.threads for j in plan_jobs(on_workers, "r1", placeholder_dataset(), None, started_at=0.0)
    ] == [
        0,
        0,
    ]
