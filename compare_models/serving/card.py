"""The model card of an export (Mitchell et al., "Model Cards for Model Reporting", 2019), in
JSON and Markdown, built from the run's record: the data and protocol, the test metrics with
their intervals and each class's recall, the gate's decision with its evidence, the
fingerprint, the most-confused pairs of classes, and (added by `export`) the input the export
expects. Credentials never reach it: it is built from the record's fields, not its environment."""

from __future__ import annotations

from typing import Any

from jinja2 import Environment, StrictUndefined

from compare_models.evaluation.records import Evaluation
from compare_models.runs.decision import GateDecision
from compare_models.runs.record import RunRecord

#: Most-confused pairs of classes listed.
CONFUSED_PAIRS = 5

_TEMPLATE = """\
# Model card: {{ c.model }} of run {{ c.run_id }}

{{ c.summary }}

## Data

- Dataset: `{{ c.data.name }}`{% if c.data.version_id %}, version `{{ c.data.version_id }}`{% endif %}
- Images: {{ c.data.sizes | tojson }}
- Classes ({{ c.data.classes | length }}): {{ c.data.classes | join(", ") }}

## Input

- RGB images of {{ c.input.image_size }}x{{ c.input.image_size }} pixels (the dataset's image size)
- The model works at {{ c.input.input_size }}x{{ c.input.input_size }}{% if c.input.input_size != c.input.image_size %}: it resizes its images itself (bilinear){% endif %}

## Protocol

{% for key, value in c.protocol.items() %}- {{ key }}: {{ value }}
{% endfor %}
## Test metrics

| metric | value | interval |
|---|---|---|
{% for m in c.metrics %}| {{ m.name }} | {{ "%.4f" | format(m.value) }} | {{ m.interval or "" }} |
{% endfor %}
| class | recall |
|---|---|
{% for name, recall in c.recall_per_class.items() %}| {{ name }} | {{ "%.4f" | format(recall) }} |
{% endfor %}
{% if c.confused %}Most confused (true → predicted, test images):
{% for p in c.confused %}- {{ p.true }} → {{ p.predicted }}: {{ p.count }}
{% endfor %}{% endif %}
## Gate

{% if c.gate %}- Decision: **{{ c.gate.decision }}** on track `{{ c.gate.track }}`
- Reason: {{ c.gate.reason }}
{% if c.gate.difference_points is not none %}- Difference from the champion: {{ "%+.2f" | format(c.gate.difference_points) }} points, McNemar p = {{ "%.3g" | format(c.gate.mcnemar_p) }}
{% endif %}{% if c.gate.band_points is not none %}- Noise band: ±{{ "%.2f" | format(c.gate.band_points) }} points ({{ c.gate.band_source }})
{% endif %}{% else %}No gate decision is recorded for this model.
{% endif %}
## Fingerprint

- SHA-256 of the run's fingerprint: `{{ c.fingerprint_sha256 or "none recorded" }}`
- Backend: {{ c.backend }}
"""


def _confused(evaluation: Evaluation | None) -> list[dict[str, Any]]:
    if evaluation is None:
        return []
    names, matrix = evaluation.class_names, evaluation.confusion_matrix
    pairs = [
        {"true": names[i], "predicted": names[j], "count": int(count)}
        for i, row in enumerate(matrix)
        for j, count in enumerate(row)
        if i != j and count > 0
    ]
    return sorted(pairs, key=lambda p: -p["count"])[:CONFUSED_PAIRS]


def card_data(
    record: RunRecord,
    model: str,
    decision: GateDecision | None,
    evaluation: Evaluation | None = None,
) -> dict[str, Any]:
    """The card's content, as JSON-ready data."""
    metrics = record.metrics[model]
    intervals = record.comparison.models.get(model) if record.comparison else None
    train = record.params.train_for(model)
    training = record.models.get(model)
    gate = None
    if decision is not None:
        pair = decision.comparison
        gate = {
            "track": decision.track,
            "decision": decision.decision,
            "reason": decision.reason,
            "champion_run_id": decision.champion_run_id,
            "difference_points": None if pair is None else 100 * pair.difference.accuracy.estimate,
            "mcnemar_p": None if pair is None else pair.mcnemar.pvalue,
            "band_points": None if decision.band is None else 100 * decision.band.points,
            "band_source": None if decision.band is None else decision.band.source,
        }
    fingerprint = record.fingerprint.sha256 if record.fingerprint else None

    def interval(name: str) -> str | None:
        found = getattr(intervals, name, None) if intervals else None
        return None if found is None else f"{found.ci_low:.4f} to {found.ci_high:.4f}"

    return {
        "run_id": record.run_id,
        "model": model,
        "summary": f"{model} trained by compare-models run {record.run_id}: test accuracy "
        f"{metrics.accuracy:.4f} on {record.dataset.sizes.get('test', 0):,} test images.",
        "data": {
            "name": record.dataset.name,
            "version_id": record.dataset.version_id,
            "sizes": dict(record.dataset.sizes),
            "classes": list(record.dataset.class_names),
        },
        "input": {
            "image_size": record.dataset.image_size,
            "input_size": train.input_size or record.dataset.image_size,
        },
        "protocol": {
            "epochs": train.epochs,
            "batch size": train.batch_size,
            "optimizer": train.optimizer,
            "learning rate": train.learning_rate,
            "seed": training.seed if training else train.seed,
            "parameters": training.parameters if training else None,
        },
        "metrics": [
            {"name": "accuracy", "value": metrics.accuracy, "interval": interval("accuracy")},
            {"name": "f1_macro", "value": metrics.f1_macro, "interval": interval("f1_macro")},
            {"name": "precision_macro", "value": metrics.precision_macro, "interval": None},
            {"name": "recall_macro", "value": metrics.recall_macro, "interval": None},
        ],
        "recall_per_class": dict(
            zip(record.dataset.class_names, metrics.recall_per_class or [], strict=False)
        ),
        "confused": _confused(evaluation),
        "gate": gate,
        "fingerprint_sha256": fingerprint,
        "backend": (training.device or {}).get("backend", "unknown") if training else "unknown",
    }


def card_markdown(data: dict[str, Any]) -> str:
    environment = Environment(
        undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True
    )
    return environment.from_string(_TEMPLATE).render(c=data)
