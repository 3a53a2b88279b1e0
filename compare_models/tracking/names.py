"""Every name compare-models gives things in MLflow: experiments, tags, registered models and
aliases. What other code finds in MLflow, it finds by these."""

from __future__ import annotations

#: One experiment per track.
EXPERIMENT_PREFIX = "compare-models/"


def experiment_name(track: str) -> str:
    return f"{EXPERIMENT_PREFIX}{track}"


def registered_name(track: str, model: str) -> str:
    """One registered model per track and model."""
    return f"{track}-{model}"


#: The registry's aliases: the model in use, and the one before it.
CHAMPION = "champion"
PREVIOUS = "previous"

# ── tags ──────────────────────────────────────────────────────────────────────
#: Our run id, on the parent run, on each training's nested run and on registered versions:
#: what finds them again, so that a retry, a resume or a sync never creates a second one.
RUN_ID = "compare_models.run_id"
#: "run" (the parent) or "training" (one model's replica)
KIND = "compare_models.kind"
KIND_RUN = "run"
KIND_TRAINING = "training"
#: a training's name in our keys (cnn, cnn.r1, ...)
TRAINING = "compare_models.training"
MODEL = "compare_models.model"
REPLICA = "compare_models.replica"
FLOW_RUN_URL = "compare_models.prefect_flow_run"
DATASET_VERSION = "compare_models.dataset"
COMMIT = "compare_models.commit"
BACKEND = "compare_models.backend"
FINGERPRINT = "compare_models.fingerprint_sha256"
#: links to the bucket (s3:// URIs): the report, the manifest, a model, its metric tables
REPORT = "compare_models.report"
MANIFEST = "compare_models.manifest"
MODEL_URI = "compare_models.model_uri"
METRICS_URI = "compare_models.metrics"
KEPT = "compare_models.kept"
#: on a registered version: the export it was built from
EXPORT_URI = "compare_models.export"
EXPORT_VERSION = "compare_models.export_version"
GATE = "compare_models.gate"

#: MLflow's own tags
PARENT = "mlflow.parentRunId"
RUN_NAME = "mlflow.runName"

#: Where a registered champion's MLflow model is logged in its run's artifacts.
REGISTERED_ARTIFACTS = "champion"

#: MLflow's limits (a longer value is cut, and says so)
MAX_PARAM_VALUE = 6000
MAX_TAG_VALUE = 8000
BATCH_PARAMS = 100
BATCH_TAGS = 100
BATCH_METRICS = 1000
