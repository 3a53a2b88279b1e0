"""The events are declared once (compare_models/events.py): their names stay what automations
and triggers already match, the emitting code builds the typed payload, prefect.yaml names only
declared events, and no other Python module spells an event's name."""

from __future__ import annotations

import ast
import importlib
import json
from fnmatch import fnmatchcase

import pytest
import yaml
from pydantic import ValidationError

from compare_models.events import (
    CHAMPION_PROMOTED,
    DATA_CHANGED,
    EVENTS,
    MODEL_REGRESSED,
    ChampionPromoted,
    DataChanged,
    ModelRegressed,
    champion_resource_id,
    dataset_resource_id,
)
from compare_models.statistics.records import Interval
from tests.support.runs import ROOT

SHA = "ab" * 32

REGRESSED = ModelRegressed(
    run_id="20260101-020000-abcd",
    model="cnn",
    track="nightly",
    reason="significantly worse",
    champion_run_id="20251231-020000-dcba",
    manifest="s3://bucket/runs/20260101-020000-abcd/manifest.json",
    accuracy_difference=Interval(estimate=-0.05, ci_low=-0.07, ci_high=-0.03),
    mcnemar_pvalue=0.001,
    worse_classes=["cat"],
)
CHANGED = DataChanged(
    source="s3://team-data/images/",
    version_id=SHA,
    parent=None,
    images=30,
    added=30,
    removed=0,
    skipped=1,
    per_class={"a": 15, "b": 15},
)
PROMOTED = ChampionPromoted(
    track="nightly",
    model="cnn",
    run_id="20260101-020000-abcd",
    previous_run_id="20251231-020000-dcba",
    how="gate",
    accuracy=0.61,
    reason="significantly better",
    export_version=3,
    export_uris={"model.onnx": "s3://bucket/exports/nightly/cnn/3/model.onnx"},
)


def test_the_names_are_the_ones_automations_and_triggers_match() -> None:
    assert MODEL_REGRESSED.name == "compare-models.model.regressed"
    assert DATA_CHANGED.name == "compare-models.data.changed"
    assert CHAMPION_PROMOTED.name == "compare-models.champion.promoted"
    assert set(EVENTS) == {MODEL_REGRESSED.name, DATA_CHANGED.name, CHAMPION_PROMOTED.name}


@pytest.mark.parametrize("name", sorted(EVENTS))
def test_each_event_names_the_function_that_emits_it(name) -> None:
    module, function = EVENTS[name].emitted_by.split(":")
    assert callable(getattr(importlib.import_module(module), function))


@pytest.mark.parametrize(
    ("event", "payload"),
    [(MODEL_REGRESSED, REGRESSED), (DATA_CHANGED, CHANGED), (CHAMPION_PROMOTED, PROMOTED)],
)
def test_the_resource_is_built_from_the_payload_and_matches_the_declared_pattern(
    event, payload
) -> None:
    labels = event.resource(payload).labels()
    assert list(labels) == [f.alias for f in event.resource_type.model_fields.values()]
    assert fnmatchcase(labels["prefect.resource.id"], event.resource_match)
    assert all(isinstance(v, str) and v for v in labels.values())


def test_the_payloads_keep_their_stored_shape() -> None:
    """What automations' templates and consumers read (`event.payload.model`, ...)."""
    regressed = REGRESSED.model_dump(mode="json")
    assert list(regressed) == [
        "run_id",
        "model",
        "track",
        "reason",
        "champion_run_id",
        "manifest",
        "accuracy_difference",
        "mcnemar_pvalue",
        "worse_classes",
    ]
    assert regressed["accuracy_difference"] == {
        "estimate": -0.05,
        "ci_low": -0.07,
        "ci_high": -0.03,
    }
    assert json.loads(json.dumps(regressed)) == regressed
    changed = CHANGED.model_dump(mode="json")
    assert list(changed) == [
        "source",
        "version_id",
        "parent",
        "images",
        "added",
        "removed",
        "skipped",
        "per_class",
    ]
    labels = DATA_CHANGED.resource(CHANGED).labels()
    assert labels == {
        "prefect.resource.id": dataset_resource_id("s3://team-data/images/"),
        "prefect.resource.name": "s3://team-data/images/",
        "compare-models.version-id": SHA,
    }
    assert MODEL_REGRESSED.resource(REGRESSED).labels()["prefect.resource.id"] == (
        "compare-models.run.20260101-020000-abcd.cnn"
    )
    promoted = PROMOTED.model_dump(mode="json")
    assert list(promoted) == [
        "track",
        "model",
        "run_id",
        "previous_run_id",
        "how",
        "accuracy",
        "reason",
        "export_version",
        "export_uris",
    ]
    assert CHAMPION_PROMOTED.resource(PROMOTED).labels() == {
        "prefect.resource.id": champion_resource_id("nightly", "cnn"),
        "prefect.resource.name": "nightly cnn",
        "compare-models.track": "nightly",
        "compare-models.model": "cnn",
    }


def test_a_payload_refuses_unknown_and_missing_fields() -> None:
    with pytest.raises(ValidationError):
        DataChanged(**CHANGED.model_dump(), extra_field=1)
    with pytest.raises(ValidationError):
        ModelRegressed(**REGRESSED.model_dump(exclude={"track"}))


def _triggers() -> list[dict]:
    spec = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    return [t for d in spec["deployments"] for t in d.get("triggers") or []]


def test_prefect_yaml_triggers_name_only_declared_events() -> None:
    triggers = [t for t in _triggers() if t.get("type") == "event"]
    assert triggers, "prefect.yaml has no event trigger to check"
    for trigger in triggers:
        named = [*trigger.get("expect", []), *trigger.get("after", [])]
        assert named, trigger
        unknown = sorted(set(named) - set(EVENTS))
        assert not unknown, f"prefect.yaml names events nobody emits: {unknown}"
        resource = (trigger.get("match") or {}).get("prefect.resource.id")
        for name in trigger.get("expect", []):
            assert resource == EVENTS[name].resource_match, (name, resource)


def test_the_regression_automation_expects_the_declared_event() -> None:
    from deployments.alerts import regression_automation

    trigger = regression_automation(None).trigger
    assert trigger.expect == {MODEL_REGRESSED.name}
    assert trigger.match.root["prefect.resource.id"] == MODEL_REGRESSED.resource_match


def test_no_other_python_module_spells_an_event_name() -> None:
    """`git grep` finds one definition of each name: compare_models/events.py."""
    found: dict[str, list[str]] = {name: [] for name in EVENTS}
    for folder in ("compare_models", "tasks", "flows", "deployments", "tools"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for node in ast.walk(tree):
                if isinstance(node, ast.Constant) and node.value in found:
                    found[node.value].append(str(path.relative_to(ROOT)))
    assert found == {name: ["compare_models/events.py"] for name in EVENTS}
