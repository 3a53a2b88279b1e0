"""The typed results of the statistics stage: what `paired.compare_all` / `compare_pair` and
`recipes.compare_recipes` return, and what the run's record stores (`metrics/comparison.json`,
the manifest's `comparison`). The run's record imports them from here, so one shape serves the
library, the record and the report.

Fields a newer writer added are ignored on reading (`extra="ignore"`), as in the run's record.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Part(BaseModel):
    """A part of a stored result: fields it does not know (a newer writer's additions) are ignored."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class Interval(_Part):
    """A point estimate with its bootstrap interval (at the comparison's confidence)."""

    estimate: float
    ci_low: float
    ci_high: float


class ModelIntervals(_Part):
    accuracy: Interval
    f1_macro: Interval


class ComparisonSettings(_Part):
    resamples: int
    seed: int
    confidence: float = Field(gt=0, lt=1)
    alpha: float = Field(gt=0, lt=1)
    method: str


class PairedTable(_Part):
    both_right: int = Field(ge=0)
    only_a_right: int = Field(ge=0)
    only_b_right: int = Field(ge=0)
    both_wrong: int = Field(ge=0)


class McNemar(_Part):
    pvalue: float
    statistic: float
    test: str
    discordant: int = Field(ge=0)


class ClassDifference(_Part):
    """One class's recall in a pair: b minus a, with its interval and Holm-corrected p-value."""

    class_name: str = Field(alias="class")
    support: int
    recall_a: float
    recall_b: float
    difference: float
    ci_low: float
    ci_high: float
    pvalue: float
    pvalue_holm: float
    significant: bool


class Differences(_Part):
    accuracy: Interval
    f1_macro: Interval


class PairComparison(_Part):
    """The paired test of model `a` against model `b` on the same test images."""

    a: str
    b: str
    n: int
    table: PairedTable
    mcnemar: McNemar
    accuracy: dict[str, Interval]
    f1_macro: dict[str, Interval]
    difference: Differences
    per_class: list[ClassDifference]
    significant_classes: list[str]
    significant: bool
    better: str | None
    verdict: str
    settings: ComparisonSettings

    @property
    def worse_classes(self) -> list[str]:
        """The classes in which `b` is significantly worse than `a` (after Holm)."""
        return [c.class_name for c in self.per_class if c.significant and c.difference < 0]


class Calibration(_Part):
    ece: float


class RecipeSummary(_Part):
    """One model's recipe over its replicas: test accuracy per seed, its mean and spread."""

    seeds: list[int]
    accuracies: list[float]
    mean: float
    std: float = Field(description="sample standard deviation across seeds (ddof=1)")


class RecipePair(_Part):
    """Two recipes compared over seeds (Welch's t-test on their replicas' test accuracies):
    the difference of the means, b minus a, with its interval."""

    a: str
    b: str
    difference: Interval
    pvalue: float
    significant: bool
    better: str | None = Field(description="the better recipe, when the difference is significant")
    verdict: str


class RecipeComparison(_Part):
    """With two or more replicas: the comparison of recipes, beside the comparison of models."""

    models: dict[str, RecipeSummary]
    pairs: list[RecipePair]


class Comparison(_Part):
    """`metrics/comparison.json`: every model's intervals and every pair's paired test."""

    models: dict[str, ModelIntervals]
    pairs: list[PairComparison]
    verdicts: list[str]
    settings: ComparisonSettings
    calibration: dict[str, Calibration] = Field(default_factory=dict)
    recipes: RecipeComparison | None = None
