"""A training's own process does not load what Keras imports only because it is installed."""

from tests.support.runs import python_json

PROBE = """
import json, sys, types
sys.modules["__main__"].__spec__ = types.SimpleNamespace(name={main!r})
from flows.train_model import UNUSED_IN_TRAINING, keras_without_unused_imports
with keras_without_unused_imports():
    import compare_models.training.fit  # keras and TensorFlow
loaded = sorted(n for n in UNUSED_IN_TRAINING if sys.modules.get(n) is not None)
import matplotlib, sklearn  # afterwards they import as usual (a plugin model may need them)
print(json.dumps(loaded))
"""


def _loaded(main: str) -> list[str]:
    return python_json(PROBE.format(main=main), timeout=120)


def test_a_worker_flow_run_process_skips_scikit_learn_and_matplotlib():
    assert _loaded("prefect.engine") == []


def test_any_other_process_keeps_them():
    """Keras loads both when they are installed: what the skipping saves, and why it is needed
    nowhere but in a training's own process (a notebook running the flow keeps them)."""
    assert _loaded("ipykernel_launcher") == ["matplotlib", "sklearn"]
