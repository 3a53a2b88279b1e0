"""The run record: manifests written before it still read, every field is typed, a newer or a
damaged manifest is refused with a clear message, and the exported schema is current."""

from __future__ import annotations

import io
import json
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest

from compare_models.runs.record import SCHEMA_VERSION, RunRecord, json_schema
from compare_models.runs.stored import UnreadableRecord, parse_record
from compare_models.statistics.paired import compare_all, compare_pair

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
ROOT = FIXTURES.parent.parent


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


@pytest.mark.parametrize("name", ["manifest-v0-first-champion.json", "manifest-v0-replay.json"])
def test_a_manifest_written_before_the_record_still_reads(name):
    raw = json.loads(fixture(name))
    assert "schema_version" not in raw  # written by the code of commit 7430348
    record = parse_record(fixture(name), name)
    assert record.schema_version == SCHEMA_VERSION and record.status == "complete"
    assert set(record.models) == set(raw["models"]) == {"cnn", "resnet50"}
    for model, trained in record.models.items():
        assert trained.model == model and trained.model_key == raw["models"][model]["model_key"]
        assert trained.history == {} and trained.resumed_from_epoch is None  # not stored then
        assert record.metrics[model].accuracy == raw["metrics"][model]["accuracy"]
        assert record.gate[model].decision == raw["gate"][model]["decision"]
        interval = record.accuracy_interval(model)
        assert interval.ci_low == raw["comparison"]["models"][model]["accuracy"]["ci_low"]
    assert record.report.index == raw["report"]["index"]
    assert len(record.objects) == len(raw["objects"])
    assert record.fingerprint.seeds == raw["fingerprint"]["seeds"]
    assert record.budget.model_dump() == raw["budget"] and record.scale == raw["scale"]


def test_the_replay_and_the_gates_paired_test_are_typed():
    record = parse_record(fixture("manifest-v0-replay.json"), "replay")
    assert record.replay.original_run_id == record.params.replay_of == "fixture-first"
    pair = record.replay.models["cnn"].pair
    assert pair.a == "original" and pair.b == "replay" and pair.settings.confidence == 0.95
    gate = record.gate["cnn"].comparison
    assert gate.per_class[0].class_name == record.dataset.class_names[0]
    assert gate.table.both_right + gate.table.only_a_right <= gate.n


def test_a_record_reads_back_what_it_wrote():
    record = parse_record(fixture("manifest-v0-replay.json"), "replay")
    written = record.model_dump_json(by_alias=True)
    again = RunRecord.model_validate_json(written)
    assert again == record and json.loads(written)["schema_version"] == SCHEMA_VERSION
    # the per-class rows keep their published key, "class"
    assert "class" in json.loads(written)["gate"]["cnn"]["comparison"]["per_class"][0]


def test_a_manifest_from_a_newer_version_is_refused_with_the_fix():
    raw = json.loads(fixture("manifest-v0-first-champion.json"))
    raw["schema_version"] = SCHEMA_VERSION + 1
    with pytest.raises(UnreadableRecord, match="newer compare-models.*upgrade"):
        parse_record(json.dumps(raw).encode(), "s3://b/runs/x/manifest.json")


@pytest.mark.parametrize(
    "change, where",
    [
        (lambda m: m["metrics"]["cnn"].update(accuracy="high"), "metrics.cnn.accuracy"),
        (lambda m: m["gate"]["cnn"].update(decision="maybe"), "gate.cnn.decision"),
        (lambda m: m.update(schema_version=True), "schema_version"),
        (lambda m: m.update(status="in-progress"), "not the manifest of a completed run"),
        (lambda m: m.pop("report"), "completed_at and report"),
    ],
)
def test_a_damaged_manifest_is_refused_naming_the_problem(change, where):
    raw = json.loads(fixture("manifest-v0-first-champion.json"))
    change(raw)
    with pytest.raises(UnreadableRecord, match="s3://b/runs/x/manifest.json") as caught:
        parse_record(json.dumps(raw).encode(), "s3://b/runs/x/manifest.json")
    assert where in str(caught.value)


def test_the_exported_schema_is_current():
    """docs/reference/manifest.schema.json is the record's schema (`make reference` writes it)."""
    stored = json.loads((ROOT / "docs" / "reference" / "manifest.schema.json").read_text())
    assert stored == json_schema(), "regenerate it: make reference (python -m tools.docs_reference)"
    assert {"schema_version", "models", "gate", "budget", "stopped_by_budget"} <= set(
        stored["properties"]
    )


# ── the confidence level that was asked for ──────────────────────────────────────────

Y = np.arange(400) % 4
RIGHT = np.eye(4)[Y] * 0.9 + 0.025
WRONG = np.eye(4)[(Y + 1) % 4] * 0.9 + 0.025
CLASSES = ["a", "b", "c", "d"]


def _mixed(fraction_wrong: float) -> np.ndarray:
    probs = RIGHT.copy()
    n = int(len(Y) * fraction_wrong)
    probs[:n] = WRONG[:n]
    return probs


def _record_at(confidence: float) -> RunRecord:
    """The fixture run, with its statistics computed again at `confidence`."""
    record = parse_record(fixture("manifest-v0-first-champion.json"), "first")
    params = record.params.model_copy(
        update={
            "comparison": record.params.comparison.model_copy(update={"confidence": confidence})
        }
    )
    statistics = compare_all(
        Y,
        {"cnn": _mixed(0.3), "resnet50": _mixed(0.1)},
        class_names=CLASSES,
        n_resamples=1000,
        confidence=confidence,
    )
    return record.model_copy(update={"params": params, "comparison": statistics})


def test_every_printed_interval_names_the_confidence_asked_for(tmp_path):
    from compare_models.cli.show import print_metrics as _print_metrics
    from compare_models.cli.show import print_replay as _print_replay
    from compare_models.config import GatePolicy
    from compare_models.gate import champions
    from compare_models.report import trends
    from compare_models.runs import track_history

    record = _record_at(0.9)
    out = io.StringIO()
    with redirect_stdout(out):
        _print_metrics(record)
    assert "90% CI" in out.getvalue() and "95%" not in out.getvalue()

    pair = compare_pair(
        Y, _mixed(0.1), _mixed(0.4), name_a="champion", name_b="challenger",
        class_names=CLASSES, n_resamples=1000, confidence=0.9,
    )  # fmt: skip
    decision, reason = champions.decide(pair, GatePolicy())
    assert decision == champions.REGRESSION and "90% CI" in reason and "95%" not in reason

    rows = track_history.rows([record])
    assert {r.confidence for r in rows} == {0.9}

    figures = trends.champion_figures([], current=record, last=5, out_dir=tmp_path)
    assert "(90% CI)" in figures[0][1] and "95%" not in figures[0][1]

    replayed = parse_record(fixture("manifest-v0-replay.json"), "replay").replay
    for replayed_model in replayed.models.values():
        replayed_model.pair.settings.confidence = 0.9
    out = io.StringIO()
    with redirect_stdout(out):
        _print_replay(replayed)
    assert "90% CI" in out.getvalue() and "95%" not in out.getvalue()
