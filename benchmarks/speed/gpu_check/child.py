"""The child: one training by the product's code (`compare_models.training.fit.train`) in a
process of its own, with its FLOPs per image and the backend allocator's peak."""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path


def _flops_per_image(model) -> float | None:
    """Forward FLOPs per image from XLA's cost analysis of the compiled forward pass (JAX)."""
    import keras

    if keras.backend.backend() != "jax":
        return None
    import jax
    import numpy as np

    batch = 32
    x = np.zeros((batch, *model.input_shape[1:]), dtype="float32")
    forward = jax.jit(
        lambda trainable, frozen, images: model.stateless_call(
            trainable, frozen, images, training=False
        )[0]
    )
    compiled = forward.lower(
        [v.value for v in model.trainable_variables],
        [v.value for v in model.non_trainable_variables],
        x,
    ).compile()
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    flops = (cost or {}).get("flops")
    return float(flops) / batch if flops else None


def _peak_allocator_bytes() -> int | None:
    import keras

    try:
        if keras.backend.backend() == "jax":
            import jax

            stats = jax.local_devices()[0].memory_stats() or {}
            return stats.get("peak_bytes_in_use")
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            return tf.config.experimental.get_memory_info("GPU:0")["peak"]
    except Exception:  # noqa: BLE001 - a number to report, not worth failing the check
        return None
    return None


def child_main(job_path: Path, out_path: Path, allow_cpu: bool) -> int:
    import logging

    import keras  # noqa: I001 - after the product's backend preparation
    import numpy as np

    from compare_models.config import Settings
    from compare_models.data.dataset import load_split
    from compare_models.models.networks import load_model
    from compare_models.storage import layout
    from compare_models.storage.store import ArtifactStore
    from compare_models.training.drills import InjectedFault
    from compare_models.training.fit import train  # prepares the backend first
    from compare_models.training.jobs import TrainingJob

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", stream=sys.stderr)
    logger = logging.getLogger("gpu-check")
    job = TrainingJob.model_validate_json(job_path.read_text())
    settings = Settings()
    store = ArtifactStore.from_settings(settings)
    marks = [time.perf_counter()]
    outcome: dict = {"name": job.name, "run_id": job.run_id}
    try:
        result = train(
            job,
            store,
            settings.cache_dir,
            logger,
            allow_cpu=allow_cpu,
            on_epoch=lambda done, total, logs: marks.append(time.perf_counter()),
        )
    except InjectedFault as exc:
        outcome["fault"] = str(exc)
        out_path.write_text(json.dumps(outcome))
        return 3
    epoch_seconds = [b - a for a, b in zip(marks, marks[1:], strict=False)]
    steady = epoch_seconds[1:] or epoch_seconds
    steps = -(-job.dataset.sizes["train"] // job.train.batch_size)
    x_test, y_test = load_split(job.dataset, "test", store, settings.cache_dir)
    probabilities = np.load(
        store.download(
            layout.predictions_key(job.run_id, job.name), Path(tempfile.mkdtemp()) / "p.npz"
        )
    )["y_prob"]
    model = load_model(
        store.download(layout.model_key(job.run_id, job.name), Path(tempfile.mkdtemp()) / "m.keras")
    )
    outcome.update(
        {
            "model": job.model,
            "backend": keras.backend.backend(),
            "device": {k: v for k, v in result.device.items() if k != "host"},
            "epochs": result.epochs,
            "resumed_from_epoch": result.resumed_from_epoch,
            "stopped_by_budget": result.stopped_by_budget,
            "batch_size": job.train.batch_size,
            "epoch_seconds": [round(s, 3) for s in epoch_seconds],
            "images_per_second": round(job.dataset.sizes["train"] * len(steady) / sum(steady), 1)
            if steady
            else None,
            "step_ms": round(1000 * statistics.mean(steady) / steps, 3) if steady else None,
            "compile_seconds": round(epoch_seconds[0] - statistics.mean(steady), 2)
            if len(epoch_seconds) > 1
            else None,
            "fit_seconds": round(result.fit_seconds, 2),
            "test_accuracy": round(float((probabilities.argmax(axis=1) == y_test).mean()), 4),
            "peak_allocator_mib": (lambda b: None if b is None else round(b / 2**20))(
                _peak_allocator_bytes()
            ),
            "forward_flops_per_image": _flops_per_image(model),
            "checkpoint_files": sorted(
                k.rsplit("/", 1)[-1]
                for k in store.list_keys(layout.checkpoint_prefix(job.run_id, job.name))
            ),
        }
    )
    out_path.write_text(json.dumps(outcome))
    return 0
