"""The Keras callbacks around a training's `fit`, one per module (as Keras' own
`keras/src/callbacks/`), in the order `compare_models.training.fit.fit` passes them:

* `nan_guard.FailOnNaN`: stops at a NaN/inf loss and remembers where it went bad.
* `epoch_logger.EpochLogger`: one line per epoch to the caller's logger (in a flow run the
  lines land in Prefect's logs) and the progress callback.
* `mlflow_epochs.MlflowEpochs`: each epoch to the training's nested MLflow run, when MLflow
  is on (`compare_models.tracking.live`).
* `s3_checkpoint.S3Checkpoint`: per-epoch checkpoints in S3 that a retried training resumes
  from.
* `budget_stop.BudgetStop`: stops at the end of the epoch in which the run's deadline passed.
* `drill.Drill`: the drills' faults (`compare_models.training.drills`), last; `drill.rig` is the
  one hook a training calls for its drills.

Every module here imports Keras, so the backend is prepared first (as `fit` does): importing one
callback alone, a test's way, sets the backend up the way a training process does.
"""

from compare_models.training import backend

backend.prepare_environment()  # before Keras starts its backend (threads, GPU memory)
