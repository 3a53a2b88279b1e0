"""Paired statistics: two models scored on the same test images (`paired`: McNemar, Holm,
intervals, verdicts; `bootstrap`: the paired percentile bootstrap they share) and recipes compared across seeds (`recipes`); both return the typed
records of `records` (`Comparison`, `PairComparison`, `RecipeComparison`, ...).

May import: `compare_models.config` and `compare_models.evaluation`. Never `compare_models.runs`:
the statistics return their own typed results, and the run's record imports them.
"""
