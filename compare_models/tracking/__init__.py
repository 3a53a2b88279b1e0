"""MLflow, an optional sink: runs, their trainings' epochs and the champions, logged to an MLflow
tracking server when `MLFLOW_TRACKING_URI` is set (`Settings.mlflow_tracking_uri`), and nothing
(not even an import of MLflow) when it is not.

The bucket stays the record: MLflow gets a copy that `compare-models mlflow sync` can always
bring up to date, so MLflow never fails a night (`sink.Sink`: a failure is noted, never raised).

* `names`: the experiment, tag, registered-model and alias names, in one place.
* `sink`: the client, its time bounds and what could not be logged.
* `records`: `Tracked`, what MLflow holds of a run (in the run record, and in `mlflow.json`).
* `lookup`: experiments and runs found by our tags, or created (so a retry never duplicates).
* `live`: a training's nested run, its epochs logged as they end (the training process).
* `runs`: a run's MLflow runs: the parent (opened before training) and its trainings.
* `sync`: a completed run logged in full, registry included (the parent flow, and `sync`).
* `registry`: the registered champions and the `champion` / `previous` aliases.

It may import the stages whose results it logs (config, storage, runs, gate's records and
champion records, serving's export records); no stage below imports it but `training.callbacks`
(for `live`); it never imports the report, the CLI or the local stack.
"""
