"""Evaluation: one model's predictions checked at the boundary (`validation`, the one check of
labels, probabilities and class names that every metric, comparison and diagnostic calls first)
and turned into its metrics (`metrics`, scikit-learn), of which the run's record keeps the
headline (`records.ModelMetrics`).

May import: `compare_models.config` only. No Keras, no S3: metrics are computed from arrays.
"""
