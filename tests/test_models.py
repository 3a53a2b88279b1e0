"""The report's two architectures, exactly."""

from tasks.models import CNN_PARAMETERS, RESNET50_PARAMETERS, build_cnn, build_model, build_resnet50


def test_cnn_matches_the_report_layer_table():
    model = build_cnn()
    assert model.count_params() == CNN_PARAMETERS == 2_915_114
    assert not model.non_trainable_weights
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == [
        "Conv2D", "Dropout", "Conv2D", "MaxPooling2D",
        "Conv2D", "Dropout", "Conv2D", "MaxPooling2D",
        "Conv2D", "Dropout", "Conv2D", "MaxPooling2D",
        "Flatten", "Dropout", "Dense", "Dropout", "Dense", "Dropout", "Dense",
    ]
    # the per-layer parameter counts of the report's table
    counted = [layer.count_params() for layer in model.layers if layer.count_params()]
    assert counted == [896, 9248, 18496, 36928, 73856, 147584, 2098176, 524800, 5130]
    assert model.output_shape == (None, 10)


def test_resnet50_with_the_report_head():
    model = build_resnet50(None)
    assert model.count_params() == RESNET50_PARAMETERS == 26_215_818
    backbone = model.get_layer("resnet50")
    assert backbone.count_params() == 23_587_712
    assert backbone.output_shape == (None, 1, 1, 2048)
    head = [type(layer).__name__ for layer in model.layers[model.layers.index(backbone) + 1:]]
    assert head == ["Flatten", "Dense", "Dropout", "Dense", "Dropout", "Dense"]


def test_unknown_model_name_is_rejected():
    import pytest

    with pytest.raises(ValueError, match="unknown model name 'vgg'"):
        build_model("vgg")
