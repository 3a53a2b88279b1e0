"""The report's two architectures, exactly, and the model registry."""

from pathlib import Path

import pytest

from compare_models.models import registry


def test_cnn_matches_the_report_layer_table():
    from compare_models.models.networks import (
        build_cnn,  # Keras: loaded by the process that runs this
    )

    model = build_cnn()
    assert model.count_params() == registry.get("cnn").parameters == 2_915_114
    assert not model.non_trainable_weights
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "Conv2D",
        "Dropout",
        "Conv2D",
        "MaxPooling2D",
        "Conv2D",
        "Dropout",
        "Conv2D",
        "MaxPooling2D",
        "Conv2D",
        "Dropout",
        "Conv2D",
        "MaxPooling2D",
        "Flatten",
        "Dropout",
        "Dense",
        "Dropout",
        "Dense",
        "Dropout",
        "Dense",
    ]
    # the per-layer parameter counts of the report's table
    counted = [layer.count_params() for layer in model.layers if layer.count_params()]
    assert counted == [896, 9248, 18496, 36928, 73856, 147584, 2098176, 524800, 5130]
    assert model.output_shape == (None, 10)


def test_resnet50_with_the_report_head():
    from compare_models.models.networks import build_resnet50

    model = build_resnet50(None)
    assert model.count_params() == registry.get("resnet50").parameters == 26_215_818
    backbone = model.get_layer("resnet50")
    assert backbone.count_params() == 23_587_712
    assert backbone.output_shape == (None, 1, 1, 2048)
    head = [type(layer).__name__ for layer in model.layers[model.layers.index(backbone) + 1 :]]
    assert head == ["Flatten", "Dense", "Dropout", "Dense", "Dropout", "Dense"]


def test_unknown_model_name_is_rejected():
    with pytest.raises(ValueError, match="unknown model name 'vgg'"):
        registry.get("vgg")


def test_registered_builder_must_match_its_parameter_count():
    spec = registry.ModelSpec(
        "wrongcount", "compare_models.models.networks:build_cnn", parameters=12
    )
    with pytest.raises(ValueError, match="has 2,915,114 parameters; its registration says 12"):
        spec.build()


def test_registration_is_checked():
    with pytest.raises(ValueError, match="lowercase"):
        registry.ModelSpec("../evil", "x:y")
    with pytest.raises(ValueError, match="module:function"):
        registry.ModelSpec("ok", "no-colon")
    # The process's registrations are restored afterwards (register has no undo: a process
    # registers its models once).
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(registry, "_registered", dict(registry._registered))
        spec = registry.register(
            registry.ModelSpec("tiny-reg", "tests.plugin_models.keras_models:build_tiny")
        )
        assert registry.get("tiny-reg") is spec and "tiny-reg" in registry.models()
    assert "tiny-reg" not in registry.models()


def _tiny_classifier(seed: int):
    """A 4x4x3 -> 10-class softmax model whose weights depend only on `seed`."""
    import keras

    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [keras.Input((4, 4, 3)), keras.layers.Flatten(), keras.layers.Dense(10, "softmax")]
    )


def test_prediction_pads_the_last_batch_and_traces_once():
    """1,000 images at batch 256: the same probabilities as `model.predict`, from one trace
    of the predict function instead of two (the short last batch)."""
    import numpy as np

    from compare_models.training.publish import predict_in_full_batches

    x = np.random.default_rng(1).random((1000, 4, 4, 3), dtype=np.float32)
    padded, plain = _tiny_classifier(0), _tiny_classifier(0)
    got = predict_in_full_batches(padded, x, 256)
    want = plain.predict(x, batch_size=256, verbose=0)
    assert got.shape == (1000, 10) and np.allclose(got, want, atol=1e-6)
    assert padded.predict_function.experimental_get_tracing_count() == 1
    assert plain.predict_function.experimental_get_tracing_count() == 2
    # fewer images than a batch: one batch of their number, nothing padded
    assert predict_in_full_batches(_tiny_classifier(0), x[:40], 256).shape == (40, 10)


def test_prediction_batch_is_bounded_by_the_pixels_the_model_works_at():
    """256 images at 32x32 (every prediction there keeps its batch), fewer for larger images or
    a model that enlarges them inside itself, never fewer than the training's batch nor 32."""
    from compare_models.models.networks import build_cnn, build_resnet50
    from compare_models.training.publish import prediction_batch

    assert prediction_batch(build_cnn(image_size=32)) == 256
    assert prediction_batch(build_cnn(image_size=32), 512) == 512
    assert prediction_batch(build_cnn(image_size=64)) == 64
    assert prediction_batch(build_cnn(image_size=128)) == 32  # 16 by its pixels
    assert prediction_batch(build_cnn(image_size=128), 48) == 48
    assert (
        prediction_batch(build_cnn(image_size=32, input_size=64)) == 64
    )  # a Resizing inside the model
    assert prediction_batch(build_resnet50(None, image_size=32, input_size=224)) == 32
    assert prediction_batch(_tiny_classifier(0)) == 256 * 64  # 4x4 images


def test_compile_model_creates_the_optimizer_state_before_the_first_step():
    """The optimizer's variables exist after `compile_model` (not first made while the first
    training step is traced), fit keeps using those very variables, and the trained weights
    equal those of Keras' own deferred path."""
    import numpy as np

    from compare_models.models.networks import compile_model

    x = np.random.default_rng(2).random((48, 4, 4, 3), dtype=np.float32)
    y = np.arange(48) % 10
    ours = compile_model(_tiny_classifier(3), "adam", 1e-2)
    assert ours.optimizer.built
    created = [id(v) for v in ours.optimizer.variables]
    assert len(created) == 1 + 2 * 2 + 1  # iterations, m and v of kernel and bias, learning rate
    deferred = compile_model(
        _tiny_classifier(3), "adam", 1e-2, optimizer_state_now=False
    )  # Keras' default
    assert not deferred.optimizer.built
    for model in (ours, deferred):
        model.fit(x, y, batch_size=16, epochs=2, shuffle=False, verbose=0)
    assert [id(v) for v in ours.optimizer.variables] == created
    assert int(ours.optimizer.iterations) == int(deferred.optimizer.iterations) == 6
    for a, b in zip(ours.get_weights(), deferred.get_weights(), strict=True):
        assert np.allclose(a, b, atol=1e-6)


def test_the_output_layer_follows_the_class_count_and_so_does_the_expected_count():
    cnn = registry.get("cnn")
    three = cnn.build(num_classes=3)
    assert three.output_shape[-1] == 3
    assert three.count_params() == cnn.expected_parameters(3) == 2_915_114 - 513 * 7
    assert cnn.expected_parameters(10) == 2_915_114


def test_a_builder_without_num_classes_serves_ten_classes_only():
    spec = registry.ModelSpec("ten-only", "tests.plugin_models.keras_models:build_tiny", 2_938)
    assert spec.build().output_shape[-1] == 10
    with pytest.raises(ValueError, match="takes no num_classes"):
        spec.build(num_classes=3)


def test_a_keras_file_saved_before_the_move_still_loads_and_predicts_the_same():
    """tests/fixtures/model-c25b36e.keras was saved at commit c25b36e, when the networks lived in
    `compare_models/models.py`: its ImageNet preprocessing layer is registered by name, so the
    file loads from `compare_models.models.networks` and gives the probabilities it gave then."""
    import numpy as np

    from compare_models.models.networks import load_model

    fixtures = Path(__file__).resolve().parent.parent / "fixtures"
    model = load_model(fixtures / "model-c25b36e.keras")
    inputs = np.load(fixtures / "model-c25b36e-inputs.npy")
    expected = np.load(fixtures / "model-c25b36e-probabilities.npy")
    assert "imagenet_preprocess" in [layer.name for layer in model.layers]
    np.testing.assert_allclose(model.predict(inputs, verbose=0), expected, rtol=1e-5, atol=1e-6)
