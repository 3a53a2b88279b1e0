"""Training one model: what a training is asked to do and hands back (`jobs`, no TensorFlow),
the Keras backend of its process (`backend`), its batches (`batches`), its checkpoints on their
way to S3 (`checkpoint_upload`) and Keras `fit` with its callbacks (`fit`).

May import: `compare_models.config`, `compare_models.device`, `compare_models.storage`,
`compare_models.data` and `compare_models.models`. Only a training process imports `fit` (and so
Keras); the parent flow imports `jobs` alone.
"""
