"""Which models a run can compare: one registry, the single extension point for models.

A model is a `ModelSpec`: its name, where its Keras builder lives ("module:function",
imported only in the training process, so the parent flow never loads TensorFlow), the
parameter count the built model must have, and whether it takes a backbone weights file
(the `resnet_weights` run parameter). Adding a model to the comparison is one builder
function and one registration; the parameter types, the CLI, the report and the
deployments all read this registry.

Register a model from your own package with a Python entry point in the group
``compare_models.models`` whose object is a `ModelSpec`, in a module that does not import
TensorFlow (keep the builder in another module), e.g. in your ``pyproject.toml``::

    [project.entry-points."compare_models.models"]
    tiny = "my_models.specs:TINY"      # TINY = ModelSpec("tiny", "my_models.keras_models:build_tiny")

or, in the process that runs everything (tests, notebooks), call `register(spec)`.
"""

from __future__ import annotations

import importlib
import inspect
import re
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

from compare_models.device import SUPPORTED_BACKENDS

ENTRY_POINT_GROUP = "compare_models.models"
NAME = re.compile(r"[a-z][a-z0-9_-]{0,31}")


@dataclass(frozen=True)
class ModelSpec:
    """One comparable model.

    Attributes:
        name: short identifier used in run ids, S3 keys and flow-run names.
        builder: ``"module:function"``; the function returns an uncompiled ``keras.Model``
            and takes ``weights`` (a local file path or None) when `takes_weights` is set.
        parameters: the exact parameter count the built model must have for CIFAR-10's ten
            classes (None: unchecked).
        head_inputs: the width of the layer before the output layer: with it, the expected
            count follows the class count (each class adds `head_inputs` weights and a bias);
            without it, the count is checked at ten classes only. A builder that takes
            ``num_classes`` gets the data's class count; one that does not serves ten classes.
        takes_weights: whether the builder takes the run's backbone weights file.
        description: one line for listings.
        relative_cost: training time per image relative to the others (for splitting cores
            between trainings that share a host; the CNN is 1).
        cpu_backend: the Keras backend its trainings use on a machine without a GPU, on a CPU
            where TensorFlow runs without oneDNN's kernels, when KERAS_BACKEND does not say
            (`device.training_backend`): whichever trained it faster there. Where TensorFlow
            has oneDNN's kernels, every model trains on TensorFlow.
    """

    name: str
    builder: str
    parameters: int | None = None
    takes_weights: bool = False
    head_inputs: int | None = None
    description: str = ""
    relative_cost: float = 1.0
    cpu_backend: str = "tensorflow"

    def __post_init__(self) -> None:
        if self.cpu_backend not in SUPPORTED_BACKENDS:
            raise ValueError(
                f"model {self.name!r}: cpu_backend {self.cpu_backend!r} must be one of "
                f"{', '.join(SUPPORTED_BACKENDS)}"
            )
        if not NAME.fullmatch(self.name):
            raise ValueError(
                f"model name {self.name!r}: use 1-32 lowercase letters, digits, '_' or '-', starting with a letter"
            )
        if ":" not in self.builder:
            raise ValueError(
                f"model {self.name!r}: builder {self.builder!r} must be 'module:function'"
            )

    def expected_parameters(self, num_classes: int = 10) -> int | None:
        """The parameter count the model must have for `num_classes` (None: unchecked)."""
        if self.parameters is None or (num_classes != 10 and self.head_inputs is None):
            return None
        extra = 0 if num_classes == 10 else (self.head_inputs + 1) * (num_classes - 10)
        return self.parameters + extra

    def build(
        self,
        weights: str | Path | None = None,
        *,
        num_classes: int = 10,
        image_size: int = 32,
        input_size: int | None = None,
    ) -> Any:
        """The uncompiled Keras model for `num_classes` classes and images of `image_size`,
        working at `input_size` (None: the image size). Imports the builder's module, and so
        TensorFlow. A builder that does not take a setting serves only its default (ten
        classes, 32 x 32 images, no resizing)."""
        module, _, function = self.builder.partition(":")
        build = getattr(importlib.import_module(module), function)
        accepted = inspect.signature(build).parameters
        kwargs: dict[str, Any] = {"weights": weights} if self.takes_weights else {}
        asked = {
            "num_classes": (num_classes, 10),
            "image_size": (image_size, 32),
            "input_size": (input_size, None),
        }
        for name, (value, default) in asked.items():
            if name in accepted:
                kwargs[name] = value
            elif value != default:
                raise ValueError(
                    f"model {self.name!r}: its builder {self.builder} takes no {name}, so it "
                    f"serves {name} {default} only, and this run asks for {value}"
                )
        model = build(**kwargs)
        expected = self.expected_parameters(num_classes)
        if expected is not None and model.count_params() != expected:
            raise ValueError(
                f"model {self.name!r} has {model.count_params():,} parameters; its registration says "
                f"{expected:,} for {num_classes} classes. Fix the builder or the registered count."
            )
        return model


BUILTIN: tuple[ModelSpec, ...] = (
    ModelSpec(
        "cnn",
        "compare_models.models.networks:build_cnn",
        2_915_114,
        head_inputs=512,
        description="the report's custom CNN (six conv layers, dense head)",
    ),
    ModelSpec(
        "resnet50",
        "compare_models.models.networks:build_resnet50",
        26_215_818,
        takes_weights=True,
        head_inputs=512,
        description="ResNet50 backbone + the report's dense head",
        # About 5x the CNN's cost per training image on the CPU, from both models' images/s
        # on 1 and 2 threads (see docs/benchmarks.md).
        relative_cost=5.0,
        # Where TensorFlow ran without oneDNN's kernels, JAX trained it faster than TensorFlow
        # and TensorFlow the CNN faster than JAX (docs/benchmarks.md, "Keras backends on the
        # CPU" and "Training against the CPU's bound").
        cpu_backend="jax",
    ),
)
DEFAULT_MODELS: tuple[str, ...] = ("cnn", "resnet50")

_registered: dict[str, ModelSpec] = {}


def register(spec: ModelSpec) -> ModelSpec:
    """Adds a model for this process (entry points reach every process, this does not)."""
    _registered[spec.name] = spec
    return spec


def _from_entry_points() -> dict[str, ModelSpec]:
    found: dict[str, ModelSpec] = {}
    for point in entry_points(group=ENTRY_POINT_GROUP):
        spec = point.load()
        if not isinstance(spec, ModelSpec) or spec.name != point.name:
            raise TypeError(
                f"entry point {point.name!r} = {point.value!r} in group {ENTRY_POINT_GROUP!r} must be a ModelSpec "
                f"named {point.name!r}"
            )
        found[spec.name] = spec
    return found


def models() -> dict[str, ModelSpec]:
    """Every model a run may name: the built-ins, entry points, then `register`ed ones."""
    return {**{s.name: s for s in BUILTIN}, **_from_entry_points(), **_registered}


def get(name: str) -> ModelSpec:
    known = models()
    if name not in known:
        raise ValueError(f"unknown model name {name!r}; choose from {sorted(known)}")
    return known[name]
