"""A trained model exported for serving, checked, and published.

`export` runs in a process of its own under Keras' TensorFlow backend
(`python -m compare_models.serving.export REQUEST_FILE`, started by `export_in_own_process`),
whatever backend trained the model: a `.keras` file holds backend-neutral weights, and both
formats are written from TensorFlow:

* **SavedModel** (`tf.saved_model.save`), signature `serving_default`: `image`, uint8
  `[N, H, W, 3]` RGB in; `probabilities` (float32 `[N, classes]`), `class_index` (int32) and
  `class_name` (string) out. The scaling to [0, 1] and any preprocessing the model has (ResNet50's
  ImageNet one) are inside, so `tf.saved_model.load` runs it without this package.
* **ONNX**, through Keras' own export (`model.export(format="onnx")`, which converts with
  tf2onnx): input `image` (uint8 NHWC), output `probabilities`.

A model trained in mixed precision is rebuilt in float32 (each layer's dtype policy, the same
weights) before it is exported, so exports are float32; the check compares each export with
that float32 model on the run's test images, and, for information, with the predictions the
run stored. An export whose largest probability difference or top-1 agreement misses the
policy's thresholds is not published (`ExportFailed`, with the numbers).
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from compare_models.config import image_shape, project_root
from compare_models.data.dataset import check_ref, normalise
from compare_models.serving.records import (
    ExportCheck,
    ExportFailed,
    ExportInput,
    ExportRequest,
    ExportResult,
)
from compare_models.storage import layout
from compare_models.training.process import ProcessTimedOut, run_in_own_process
from compare_models.training.zygote import WarmStart

#: What a warm export process has imported before it forks (`training.zygote`). Not
#: onnxruntime, which starts a thread when it is imported (a fork must not copy a process
#: whose other threads may hold locks).
EXPORT_PRELOAD = (
    "compare_models.serving.export",
    "compare_models.serving.publish",
    "compare_models.training.publish",
    "compare_models.models.networks",
)

#: Prediction batches read from the test split at a time, in the export's check.
CHUNK_BATCHES = 4


def compare(format: str, probs: np.ndarray, reference: np.ndarray, policy) -> ExportCheck:
    """`probs` of an export against the trained model's `reference` on the same images."""
    if probs.shape != reference.shape:
        raise ExportFailed(
            f"the {format} export gave outputs of shape {probs.shape}, the model {reference.shape}"
        )
    difference = float(np.max(np.abs(probs - reference))) if len(probs) else 0.0
    agreement = float(np.mean(probs.argmax(1) == reference.argmax(1))) if len(probs) else 1.0
    return ExportCheck(
        format=format,
        images=len(probs),
        max_probability_difference=difference,
        top1_agreement=agreement,
        passed=bool(
            np.isfinite(difference)
            and difference <= policy.max_probability_difference
            and agreement >= policy.min_top1_agreement
        ),
    )


def preprocessing_of(model) -> str:
    """What `model` does to its images itself, in words, from its own layers (the export adds
    the scaling to [0, 1] in front of it)."""
    import keras

    steps = ["scaled to [0, 1] (x / 255) inside the model"]
    for layer in model.layers:
        if isinstance(layer, keras.layers.Resizing):
            steps.append(f"resized to {layer.height}x{layer.width} ({layer.interpolation})")
        elif layer.name == "imagenet_preprocess":
            steps.append("ImageNet's preprocessing (caffe: BGR, mean-subtracted)")
    return "; then ".join(steps)


def float32_model(model):
    """`model` rebuilt with every layer in float32 and the same weights."""
    import keras

    def in_float32(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    rebuilt = keras.models.clone_model(model, clone_function=in_float32, recursive=True)
    rebuilt.set_weights(model.get_weights())
    return rebuilt


def serving_model(model, height: int, width: int):
    """uint8 images in, scaled to [0, 1] as in training, then `model`."""
    import keras

    image = keras.Input(shape=(height, width, 3), dtype="uint8", name="image")
    scaled = keras.layers.Rescaling(1.0 / 255.0, name="scale_to_unit", dtype="float32")(image)
    return keras.Model(image, model(scaled), name="serving")


def write_savedmodel(model, folder: Path, class_names: list[str], height: int, width: int) -> None:
    import tensorflow as tf

    labels = tf.constant(class_names)

    class Serving(tf.Module):
        def __init__(self, keras_model):
            super().__init__()
            self.model = keras_model

        @tf.function(
            input_signature=[tf.TensorSpec([None, height, width, 3], tf.uint8, name="image")]
        )
        def serve(self, image):
            probabilities = self.model(image, training=False)
            index = tf.argmax(probabilities, axis=-1, output_type=tf.int32)
            return {
                "probabilities": probabilities,
                "class_index": index,
                "class_name": tf.gather(labels, index),
            }

    module = Serving(model)
    tf.saved_model.save(module, str(folder), signatures={"serving_default": module.serve})


def savedmodel_predictor(folder: Path):
    """The SavedModel's `serving_default`, loaded back: uint8 images in, probabilities out."""
    import tensorflow as tf

    serve = tf.saved_model.load(str(folder)).signatures["serving_default"]
    return lambda images: serve(image=tf.constant(images))["probabilities"].numpy()


def write_onnx(model, path: Path) -> None:
    """Keras' ONNX export, its output renamed `probabilities`."""
    import onnx

    model.export(str(path), format="onnx", verbose=False)
    graph = onnx.load(str(path))
    old = graph.graph.output[0].name
    for node in graph.graph.node:
        node.output[:] = ["probabilities" if name == old else name for name in node.output]
    graph.graph.output[0].name = "probabilities"
    onnx.checker.check_model(graph)
    onnx.save(graph, str(path))


def onnx_predictor(path: Path):
    """The ONNX file in onnxruntime: uint8 images in, probabilities out."""
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return lambda images: session.run(["probabilities"], {"image": images})[0]


def uint8_chunks(x, size: int) -> Iterator[np.ndarray]:
    """A split's images as uint8, `size` at a time: from a reader of its shards
    (`ShardReader.pixels`), so a split of any size is read in bounded memory, or from floats in
    [0, 1] held in memory (a split prepared before shards)."""
    for start in range(0, len(x), size):
        stop = min(len(x), start + size)
        if isinstance(x, np.ndarray):
            yield np.rint(x[start:stop] * 255.0).astype(np.uint8)
        else:
            yield x.pixels(range(start, stop))


def checked_predictions(model, x, exports: dict, batch: int) -> tuple[np.ndarray, dict]:
    """The model's probabilities on the split `x` (the reference) and each export's
    (`exports`: name to a predictor of uint8 images), chunk by chunk: the probabilities are
    kept, the images only for their chunk."""
    from compare_models.training.publish import predict_padded

    batch = min(batch, len(x)) or 1  # as `predict_in_full_batches` takes it, for the whole split
    reference, outputs = [], {name: [] for name in exports}
    for images in uint8_chunks(x, batch * CHUNK_BATCHES):
        reference.append(predict_padded(model, normalise(images), batch))
        for name, predict in exports.items():
            outputs[name].append(
                np.concatenate(
                    [predict(images[i : i + batch]) for i in range(0, len(images), batch)]
                )
            )
    empty = np.zeros((0, model.outputs[0].shape[-1]), np.float32)  # an empty test split
    return np.concatenate(reference or [empty]), {
        name: np.concatenate(parts or [empty]) for name, parts in outputs.items()
    }


def _versions() -> dict[str, str]:
    import importlib.metadata as metadata

    return {
        name: metadata.version(name)
        for name in ("tensorflow", "keras", "tf2onnx", "onnx", "onnxruntime")
    }


def export(request: ExportRequest) -> ExportResult:
    """Builds each format, checks it, and publishes the export (see the module docstring)."""
    if os.environ.get("KERAS_BACKEND", "tensorflow") != "tensorflow":
        raise ExportFailed("exports are written under Keras' TensorFlow backend (KERAS_BACKEND)")
    from compare_models.config import Settings
    from compare_models.data.dataset import split_images
    from compare_models.models.networks import load_model
    from compare_models.serving.publish import (
        claim_version,
        export_uris,
        triton_config,
        upload_export,
    )
    from compare_models.storage.store import ArtifactStore
    from compare_models.training.backend import configure_device
    from compare_models.training.publish import prediction_batch

    started = time.perf_counter()
    check_ref(request.dataset)
    settings = Settings()
    configure_device(request.threads, require_gpu=False, allow_cpu=True)
    import keras

    # the worker's precision (COMPARE_MODELS_PRECISION) is the training's: exports are float32
    keras.mixed_precision.set_global_policy("float32")
    store = ArtifactStore.from_settings(settings, outage_minutes=request.store_outage_minutes)
    if request.track is None:
        done = _earlier_export(store, layout.run_export_prefix(request.run_id, request.model))
        if done is not None:
            return done
    # read from its shards a chunk at a time, as uint8 (floats only for a split prepared before
    # shards, which is held whole)
    x_test = split_images(request.dataset, "test", store, settings.cache_dir)
    height, width = image_shape(request.dataset.image_size)[:2]
    names = list(request.dataset.class_names)
    policy = request.policy
    with tempfile.TemporaryDirectory(dir=settings.cache_dir) as tmp:
        trained = load_model(store.download(request.model_key, Path(tmp) / "model.keras"))
        outputs = trained.outputs[0].shape[-1]
        if outputs != len(names):
            raise ExportFailed(
                f"the model {request.model_key} has {outputs} outputs, its data {len(names)} classes"
            )
        policies = {layer.dtype_policy.name for layer in trained.layers}
        precision = next((p for p in sorted(policies) if p.startswith("mixed")), "float32")
        model = float32_model(trained) if precision != "float32" else trained
        serving = serving_model(model, height, width)
        folder = Path(tmp) / "export"
        folder.mkdir()
        exports = {}
        if "savedmodel" in policy.formats:
            write_savedmodel(serving, folder, names, height, width)
            exports["savedmodel"] = savedmodel_predictor(folder)
        if "onnx" in policy.formats:
            write_onnx(serving, folder / "model.onnx")
            exports["onnx"] = onnx_predictor(folder / "model.onnx")
        reference, outputs = checked_predictions(model, x_test, exports, prediction_batch(model))
        checks = [compare(name, probs, reference, policy) for name, probs in outputs.items()]
        failed = [c for c in checks if not c.passed]
        if failed:
            raise ExportFailed(
                f"not published: {'; '.join(c.describe() for c in failed)} (the policy asks for "
                f"at most {policy.max_probability_difference:g} and at least "
                f"{100 * policy.min_top1_agreement:g}% identical)"
            )
        stored = None
        if precision != "float32":
            from compare_models.runs.artifacts import load_predictions

            trained_probs = load_predictions(
                store, layout.predictions_key(request.run_id, request.model)
            )
            stored = compare(checks[-1].format, outputs[checks[-1].format], trained_probs, policy)
        (folder / "labels.txt").write_text("".join(f"{name}\n" for name in names))
        model_input = ExportInput(
            height=height,
            width=width,
            preprocessing=preprocessing_of(model),
        )
        if request.card_markdown:
            (folder / "model_card.md").write_text(request.card_markdown)
            card = {**request.card_json, "input": model_input.model_dump(mode="json")}
            (folder / "model_card.json").write_text(json.dumps(card, indent=2, sort_keys=True))
        if request.track:
            version = claim_version(store, request.track, request.model, run_id=request.run_id)
            prefix = layout.export_version_prefix(request.track, request.model, version)
        else:
            version, prefix = None, layout.run_export_prefix(request.run_id, request.model)
        result = ExportResult(
            run_id=request.run_id,
            model=request.model,
            track=request.track,
            version=version,
            prefix=prefix,
            uris=export_uris(store, folder, prefix),
            checks=checks,
            input=model_input,
            class_names=names,
            trained_backend=request.card_json.get("backend", "unknown"),
            trained_precision=precision,
            vs_trained_predictions=stored,
            seconds=time.perf_counter() - started,
            exported_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        manifest = {**result.model_dump(mode="json"), "libraries": _versions()}
        upload_export(store, folder, prefix, manifest)
    if request.track and "onnx" in policy.formats:
        config = triton_config(request.model, height=height, width=width, classes=len(names))
        store.put_bytes(config.encode(), layout.triton_config_key(request.track, request.model),
                        overwrite=True, content_type="text/plain")  # fmt: skip
    return result


def _earlier_export(store, prefix: str) -> ExportResult | None:
    """A complete export already under `prefix` (a by-hand export asked for again), or None;
    the files of an incomplete one (no manifest: its process was killed) are removed."""
    from compare_models.serving.publish import stored_export

    done = stored_export(store, prefix)
    if done is None:
        store.delete_prefix(prefix)
    return done


def export_in_own_process(request: ExportRequest, *, timeout: float) -> ExportResult:
    """`export(request)` in a process of its own under the TensorFlow backend; raises
    `ExportFailed` with the last line the process wrote when it failed or ran too long. The
    request goes through a file: its model card can outgrow one command-line argument."""
    env = {**os.environ, "KERAS_BACKEND": "tensorflow"}
    with tempfile.NamedTemporaryFile("w", suffix=".json", encoding="utf-8") as file:
        file.write(request.model_dump_json())
        file.flush()
        try:
            outcome = run_in_own_process(
                [sys.executable, "-m", "compare_models.serving.export", file.name],
                timeout=timeout,
                cwd=project_root(),
                env=env,
                warm=WarmStart(backend="tensorflow", preload=EXPORT_PRELOAD),
            )
        except ProcessTimedOut:
            raise ExportFailed(f"the export took longer than {timeout:g} s") from None
    if outcome.returncode != 0:
        lines = [line for line in outcome.errors.strip().splitlines() if line.strip()]
        failed = [line for line in lines if "ExportFailed" in line]
        raise ExportFailed(((failed or lines or ["no output"])[-1])[:600])
    return ExportResult.model_validate_json(outcome.output.strip().splitlines()[-1])


#: The most bytes of a request file read (a model card of many classes is well below it).
MAX_REQUEST_BYTES = 16 << 20


def main(argv: list[str]) -> int:
    """`python -m compare_models.serving.export REQUEST_FILE`: prints the `ExportResult` JSON."""
    if len(argv) != 1:
        print("usage: python -m compare_models.serving.export REQUEST_FILE", file=sys.stderr)
        return 2
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    with open(argv[0], "rb") as file:
        request = ExportRequest.model_validate_json(file.read(MAX_REQUEST_BYTES + 1))
    print(export(request).model_dump_json())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
