"""The gate's decision, as the run's record stores it: the decision words, the noise band and
the test images a decision compared on, and the `GateDecision` record itself.

The words are defined here, once. The gate (`compare_models.gate`) decides and returns these
records; the run's record stores them; the report, the trends, the CLI and the events read
them. They live in the record's stage, not the gate's, because the record and the report must
not import the gate's logic (see `[tool.importlinter]` in pyproject.toml): this module holds
no logic, only the shape of a decision.
"""

from __future__ import annotations

from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

from compare_models.statistics.learning_curve import LearningCurve
from compare_models.statistics.records import PairComparison

#: Decisions of the gate, in the words the manifest, report, CLI and events use.
Decision = Literal[
    "first-champion",
    "promoted",
    "regression",
    "within-noise",
    "no-change",
    "not-comparable",
    "already-champion",
]

#: Every decision word, in the order above.
DECISIONS: tuple[str, ...] = get_args(Decision)

FIRST, PROMOTED, REGRESSION, WITHIN_NOISE, NO_CHANGE, NOT_COMPARABLE, ALREADY = DECISIONS


class _Part(BaseModel):
    """A part of the record: fields it does not know (a newer writer's additions) are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class CurveBand(_Part):
    """The learning curve behind a band (source `curve`) and what it expects tonight: the
    accuracy it predicts at tonight's number of training images and the half-width of the
    interval for tonight's residual from it (`compare_models.statistics.learning_curve`)."""

    fit: LearningCurve
    train_images: int = Field(gt=0, description="tonight's training images")
    test_images: int | None = Field(
        default=None, gt=0, description="tonight's test images (None in older records)"
    )
    predicted: float = Field(description="the curve's accuracy at tonight's training images")
    residual_points: float = Field(
        ge=0, description="half-width of the interval for tonight's residual, a fraction"
    )


class ExportNote(_Part):
    """What serving got of a new champion: the export version published, or why none was."""

    version: int | None = Field(default=None, ge=1, description="None: not published")
    prefix: str | None = Field(default=None, description="its s3:// prefix")
    checks: list[str] = Field(default_factory=list, description="each format's check, in words")
    error: str | None = Field(default=None, description="why it was not published")


class NoiseBand(_Part):
    """How far a challenger's accuracy may fall from (or rise above) the champion's before it
    counts: the recipe's own seed-to-seed noise, and where that estimate came from."""

    points: float = Field(
        ge=0, description="half-width for the accuracy, a fraction (0.01 = 1 point)"
    )
    class_points: dict[str, float] = Field(description="half-width per class, for its recall")
    source: Literal["replicas", "curve", "history", "tolerance", "off"]
    runs: int = Field(ge=0, description="how many accuracies it was estimated from")
    detail: str
    class_source: (
        Literal["replicas", "curve", "history", "predictions", "tolerance", "off"] | None
    ) = Field(default=None, description="where the class bands came from (None: as `source`)")
    curve: CurveBand | None = Field(
        default=None, description="the learning curve, when the band came from it"
    )


class TestImages(_Part):
    """Which test images a gate decision compared on: the run's own."""

    count: int = Field(ge=0)
    test_indices_sha256: str | None = None
    version_id: str | None = None


class GateDecision(_Part):
    """The gate's judgement of one model against the champion of its track. `rescored`: the
    champion was tested on other images, and its stored model predicted this run's test images
    (`rescored_predictions_key`) for the comparison."""

    model: str
    track: str
    decision: Decision
    reason: str
    champion_run_id: str | None
    comparison: PairComparison | None = None
    band: NoiseBand | None = None
    attempts: int = 1
    lost_race_to: list[str] = Field(default_factory=list)
    test_images: TestImages | None = None
    rescored: bool = False
    rescored_predictions_key: str | None = None
    export: ExportNote | None = Field(
        default=None, description="the serving export of a new champion (None: no new champion)"
    )
