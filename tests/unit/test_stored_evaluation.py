"""A model's stored evaluation (`metrics/<model>.json`) read back: untrusted, so validated, and
a damaged file is refused naming the file and the key that is wrong."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from compare_models.evaluation.records import Evaluation
from compare_models.runs.artifacts import UnreadableMetrics, parse_metrics

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
WHERE = "s3://b/runs/x/metrics/cnn.json"


def _stored() -> dict:
    """What the run stored at 3cca1cb (tests/unit/test_evaluation.py says how it was made)."""
    return json.loads((FIXTURES / "metrics-3cca1cb.json").read_text())


def test_a_stored_evaluation_reads_as_the_record():
    evaluation = parse_metrics(json.dumps(_stored()).encode(), WHERE)
    assert isinstance(evaluation, Evaluation)
    assert evaluation.model_dump(mode="json", by_alias=True) == _stored()


@pytest.mark.parametrize(
    "change, where",
    [
        (lambda m: m.update(accuracy="high"), "accuracy"),
        (lambda m: m.pop("per_class"), "per_class"),
        (lambda m: m["per_class"][1].pop("class"), "per_class.1.class"),
        (lambda m: m["per_class"][0].update(support=2.5), "per_class.0.support"),
        (lambda m: m["roc_curves"]["micro"].update(tpr=None), "roc_curves.micro.tpr"),
        (lambda m: m["confusion_matrix"][2].append("x"), "confusion_matrix.2.3"),
        (lambda m: m.update(class_names="cat"), "class_names"),
    ],
)
def test_a_damaged_evaluation_is_refused_naming_the_key(change, where):
    raw = _stored()
    change(raw)
    with pytest.raises(UnreadableMetrics, match=WHERE) as caught:
        parse_metrics(json.dumps(raw).encode(), WHERE)
    assert f"{where}:" in str(caught.value)


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b"null", b'"metrics"'])
def test_what_is_not_an_evaluation_object_is_refused(data):
    with pytest.raises(UnreadableMetrics, match=f"{WHERE} is not a valid evaluation record"):
        parse_metrics(data, WHERE)
