"""The models: which ones a run may compare (`registry`, the one extension point), the reference
report's Keras networks (`networks`) and ResNet50's backbone weights (`weights`).

May import: `compare_models.config`, `compare_models.device`, `compare_models.storage` and
`compare_models.data` (weights files are fetched and checked like archives). Keras is imported
only by `networks`, which only training processes load.
"""
