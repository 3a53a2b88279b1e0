"""A model from outside the project, registered through the `compare_models.models` entry
point group, as a user's own package would (see tests/integration/test_comparison_flow.py)."""
