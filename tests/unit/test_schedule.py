"""How trainings share a CPU host (`execution.schedule`) and the time budget's deadline."""

from __future__ import annotations

import pytest

from compare_models.config import ExecutionParams, RunParams
from compare_models.training_jobs import AUTO_SCHEDULE, plan_jobs, resolve_schedule, thread_plan
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
    """On workers the trainings run at once; a CPU worker splits its cores by model cost
    unless an even split is asked."""
    for schedule in ("auto", "weighted", "sequential"):
        execution = ExecutionParams(trainer="deployment", schedule=schedule)
        assert resolve_schedule(execution) == "weighted"
    assert (
        resolve_schedule(ExecutionParams(trainer="deployment", schedule="parallel")) == "parallel"
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
    jobs = plan_jobs(on_workers, "r1", placeholder_dataset(), None, started_at=0.0)
    assert [j.threads for j in jobs] == [0, 0]
    assert [round(j.cpu_share, 3) for j in jobs] == [0.167, 0.833]  # by cost: 1 and 5 per image


def test_a_worker_sizes_threads_from_the_jobs_share(monkeypatch):
    """A CPU worker running the run's trainings at once gives each its share of its cores
    (the weighted schedule of a local run), not an even split between its slots."""
    from compare_models import training

    monkeypatch.setattr(training, "available_cpus", lambda: 2)
    monkeypatch.setenv("COMPARE_MODELS_WORKER_SLOTS", "2")
    assert training.default_threads() == 1
    assert [training.default_threads(s) for s in (1 / 6, 5 / 6)] == [1, 2]
    monkeypatch.setattr(training, "available_cpus", lambda: 12)
    assert [training.default_threads(s) for s in (1 / 6, 5 / 6)] == [2, 10]
    monkeypatch.setenv("COMPARE_MODELS_WORKER_SLOTS", "1")  # a pod per training: every core
    assert [training.default_threads(s) for s in (1 / 6, 5 / 6, None)] == [12, 12, 12]


def test_each_model_can_train_with_its_own_settings():
    params = RunParams.model_validate(
        {"train": {"epochs": 2}, "train_per_model": {"cnn": {"epochs": 6, "batch_size": 64}}}
    )
    cnn, resnet = plan_jobs(params, "r1", placeholder_dataset(), None, started_at=0.0)
    assert (cnn.train.epochs, cnn.train.batch_size) == (6, 64)
    assert (resnet.train.epochs, resnet.train.batch_size) == (2, 128)
    assert (
        cnn.recipe()
        != plan_jobs(RunParams(), "r1", placeholder_dataset(), None, started_at=0.0)[0].recipe()
    )
    only_resnet = RunParams.model_validate(
        {"models": ["resnet50"], "train_per_model": {"cnn": {"epochs": 6}}}
    )
    assert [
        j.model for j in plan_jobs(only_resnet, "r1", placeholder_dataset(), None, started_at=0.0)
    ] == ["resnet50"]
    for bad, message in (
        ({"cnx": {"epochs": 1}}, r"unknown model\(s\) \['cnx'\]"),
        (
            {"cnn": {"epochs": 0}},
            r"train_per_model\['cnn'\]: epochs: Input should be greater than 0",
        ),
        ({"cnn": {"epoch": 3}}, r"train_per_model\['cnn'\]: epoch: Extra inputs are not permitted"),
        ({"cnn": {"learning_rate": "fast"}}, r"train_per_model\['cnn'\]: learning_rate"),
    ):
        with pytest.raises(ValueError, match=message):
            RunParams.model_validate({"train_per_model": bad})


def test_an_explicit_setting_overrides_the_presets_per_model_value():
    from compare_models.config import PRESETS, preset_params

    demo = preset_params("demo")
    assert demo.train_per_model == PRESETS["demo"]["train_per_model"]
    assert demo.train_for("cnn").epochs > demo.train_for("resnet50").epochs
    two = preset_params("demo", train={"epochs": 2})
    assert two.train_for("cnn").epochs == two.train_for("resnet50").epochs == 2
    assert preset_params("demo").train_per_model == demo.train_per_model  # the preset is unchanged
    # a caller's per-model values merge into the preset's, model by model, whatever the order
    mine = preset_params(
        "demo", train_per_model={"cnn": {"batch_size": 64}}, train={"learning_rate": 0.01}
    )
    assert mine.train_per_model["cnn"] == {
        **PRESETS["demo"]["train_per_model"]["cnn"],
        "batch_size": 64,
    }
    assert mine.train_for("cnn").learning_rate == 0.01


def test_the_report_says_which_model_trained_how_long():
    from compare_models.config import preset_params
    from compare_models.report_header import run_info
    from compare_models.run_record import RunRecord

    demo = preset_params("demo")
    cnn, resnet = demo.train_for("cnn").epochs, demo.train_for("resnet50").epochs
    assert demo.epochs_text() == f"{cnn} (cnn), {resnet} (resnet50)"
    assert demo.per_model_training() == f"cnn: epochs {cnn}"
    dataset = placeholder_dataset()
    record = RunRecord(run_id="r1", params=demo, dataset=dataset)
    note = record.scale
    assert f"{cnn} (cnn), {resnet} (resnet50) epoch(s)" in note and "--preset seed" in note
    info = run_info(record)
    assert info["per_model_training"] == f"cnn: epochs {cnn}"
    assert info["epochs"] == f"{cnn} (cnn), {resnet} (resnet50)"
    assert RunParams().epochs_text() == "10" and RunParams().per_model_training() == ""
