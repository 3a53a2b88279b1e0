"""Training one model: what a training is asked to do and hands back (`jobs`, no TensorFlow),
the Keras backend of its process (`backend`), its batches (`batches`), the Keras callbacks around
`fit`, one per module (`callbacks/`), its checkpoints on their way to S3 (`checkpoint_upload`),
a model saved locally (`saving`), the finished model published (`publish`), `train` itself
(`fit`), the drills a training injects into itself on purpose (`drills`, no TensorFlow) and a
training or a re-scoring in a process of its own (`process`, no TensorFlow).

May import: `compare_models.config`, `compare_models.device`, `compare_models.storage`,
`compare_models.data` and `compare_models.models` (and `compare_models.runs.fingerprint`, the
training's host in the run's fingerprint). Only a training process (and the gate's re-scoring
process, for `publish.predict_in_full_batches`) imports `fit`, `publish`, `saving` and
`callbacks` (and so Keras); the parent flow imports `jobs`, `drills` and `process` alone.
"""
