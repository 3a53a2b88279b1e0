"""How trainings share a CPU host (`execution.schedule`) and the time budget's deadline."""

from __future__ import annotations

import pytest

from compare_models.config import ExecutionParams, RunParams
from compare_models.training.jobs import (
    AUTO_SCHEDULE,
    cpu_shares,
    plan_jobs,
    resolve_schedule,
    thread_plan,
)
from tests.support.runs import placeholder_dataset

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
    from compare_models.training import fit as training

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
    from compare_models.report.header import run_info
    from compare_models.runs.record import RunRecord

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


def test_replicas_are_more_trainings_of_the_same_cost():
    """Each replica of a model is a training of its own, named `<model>.r<k>`: at once they
    split the cores between all of them (by cost, or evenly); one after the other each has
    every core."""
    assert thread_plan(("cnn",), "parallel", 12, 3) == {"cnn": 4, "cnn.r1": 4, "cnn.r2": 4}
    assert thread_plan(("cnn",), "sequential", 12, 3) == {"cnn": 12, "cnn.r1": 12, "cnn.r2": 12}
    # costs 1 (cnn) and 5 (resnet50), each twice: 12 in all
    assert thread_plan(MODELS, "weighted", 12, 2) == {
        "cnn": 1,
        "cnn.r1": 1,
        "resnet50": 5,
        "resnet50.r1": 5,
    }
    assert cpu_shares(MODELS, "weighted", 2) == pytest.approx(
        {"cnn": 1 / 12, "cnn.r1": 1 / 12, "resnet50": 5 / 12, "resnet50.r1": 5 / 12}
    )
    assert cpu_shares(MODELS, "parallel", {"cnn": 3, "resnet50": 1}) == pytest.approx(
        {"cnn": 0.25, "cnn.r1": 0.25, "cnn.r2": 0.25, "resnet50": 0.25}
    )
    # one replica: exactly as before, keyed by model
    assert cpu_shares(MODELS, "weighted", 1) == cpu_shares(MODELS, "weighted")
    assert thread_plan(MODELS, "weighted", 12, 1) == {"cnn": 2, "resnet50": 10}


def test_replicas_train_with_consecutive_seeds(monkeypatch):
    from compare_models.training import jobs as training_jobs

    monkeypatch.setattr(training_jobs, "available_cpus", lambda: 12)
    params = RunParams.model_validate(
        {
            "models": ["cnn"],
            "train": {"seed": 7, "replicas": 3},
            "execution": {"schedule": "parallel"},
        }
    )
    jobs = plan_jobs(params, "r1", placeholder_dataset(), None, started_at=0.0)
    assert [j.name for j in jobs] == ["cnn", "cnn.r1", "cnn.r2"]
    assert [j.model for j in jobs] == ["cnn"] * 3 and [j.replica for j in jobs] == [0, 1, 2]
    assert [j.train.seed for j in jobs] == [7, 8, 9]
    assert [j.threads for j in jobs] == [4, 4, 4]  # three trainings at once on 12 cores
    assert [j.label for j in jobs] == ["cnn", "cnn (replica 1)", "cnn (replica 2)"]
    assert len({j.recipe() for j in jobs}) == 3  # each replica is its own recipe (its seed)
    # how many replicas a run trains is no part of a training's recipe
    once = RunParams.model_validate({"models": ["cnn"], "train": {"seed": 7}})
    assert plan_jobs(once, "r1", placeholder_dataset(), None, started_at=0.0)[0].recipe() == (
        jobs[0].recipe()
    )

    sequential = params.model_copy(update={"execution": ExecutionParams(schedule="sequential")})
    jobs = plan_jobs(sequential, "r1", placeholder_dataset(), None, started_at=0.0)
    assert [j.threads for j in jobs] == [12, 12, 12]  # one after the other, each with all cores

    both = RunParams.model_validate(
        {"train": {"replicas": 2}, "execution": {"trainer": "deployment"}}
    )
    jobs = plan_jobs(both, "r1", placeholder_dataset(), None, started_at=0.0)
    assert [j.name for j in jobs] == ["cnn", "cnn.r1", "resnet50", "resnet50.r1"]
    assert [j.train.seed for j in jobs] == [42, 43, 42, 43]
    assert [j.threads for j in jobs] == [0] * 4
    assert [round(j.cpu_share, 3) for j in jobs] == [0.083, 0.083, 0.417, 0.417]
    assert sum(j.cpu_share for j in jobs) == pytest.approx(1.0)


def test_a_replica_seed_past_the_largest_is_refused():
    """Refused with the parameters, before any data or training work; per model too."""
    with pytest.raises(ValueError, match="needs seeds up to 4294967296"):
        RunParams.model_validate({"models": ["cnn"], "train": {"seed": 2**32 - 2, "replicas": 3}})
    with pytest.raises(ValueError, match="needs seeds up to 4294967296"):
        RunParams.model_validate(
            {"models": ["cnn"], "train_per_model": {"cnn": {"seed": 2**32 - 2, "replicas": 3}}}
        )
    fits = RunParams.model_validate(
        {"models": ["cnn"], "train": {"seed": 2**32 - 3, "replicas": 3}}
    )
    seeds = [
        j.train.seed for j in plan_jobs(fits, "r1", placeholder_dataset(), None, started_at=0.0)
    ]
    assert seeds == [2**32 - 3, 2**32 - 2, 2**32 - 1]
