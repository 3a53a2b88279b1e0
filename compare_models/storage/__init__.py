"""The object store: every S3 key in one place (`layout`), the one boto3 class that reads and
writes them (`store`: write-once objects, conditional writes, presigning, outage retries) and its
errors (`errors`: which failures are transient, a full local disk).

May import: `compare_models.config` and `compare_models.models.registry` (the layout checks a
model's name before it becomes part of a key). Never the data, training, evaluation, statistics,
runs, gate or report stages (an import-linter contract holds it to that).
"""
