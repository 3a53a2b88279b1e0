"""Serving: the champion leaves the bucket. A trained `.keras` model exported to the formats
serving systems read (a TF SavedModel with a serving signature for TF Serving, an ONNX model for
Triton and onnxruntime), each checked against the trained model on the run's test images before
it is published (`export`), and published under `exports/<track>/<model>/<version>/` with a
version number that only grows (`publish`).

May import: `compare_models.config`, `compare_models.storage`, `compare_models.data`,
`compare_models.models`, `compare_models.training` and `compare_models.runs`. Never the gate,
the report or the CLI: the gate calls it, not the other way round.
"""
