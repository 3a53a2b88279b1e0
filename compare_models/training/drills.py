"""Drills: faults a training injects into itself on purpose, for the resume and outage tests, the
fault benchmarks (`benchmarks/drills/faults.py`, `benchmarks/studies/gate_noise.py`) and the GPU check's drills.

They are declared here, once, as one typed record, `Drills`. A training runs in a process of its
own (the local trainer's subprocess, a worker's flow run), so the drills travel to it as one
environment variable, `COMPARE_MODELS_DRILLS`, holding the record as JSON; the training process
inherits it from its parent (set it in a worker's environment for the worker's trainings). Unset
(or empty), as in normal operation, there are no drills.

    COMPARE_MODELS_DRILLS='{"fail_after_epoch": 2}' compare-models run ...
    env = {**os.environ, **Drills(shuffle_labels=0.3333).environment()}  # for a subprocess

Inside the training, `compare_models.training.callbacks.drill.rig` is the one hook that reads
them and puts them in place. No Keras in here: tests, benchmarks and the parent flow import it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError

#: The one environment variable that hands the drills (`Drills`, as JSON) to a training process.
DRILLS_ENV = "COMPARE_MODELS_DRILLS"


class InjectedFault(RuntimeError):
    """The failure `Drills.fail_after_epoch` injects."""


class Drills(BaseModel):
    """What a training does wrong on purpose; every field unset (None) is a drill not run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    fail_after_epoch: int | None = Field(
        default=None,
        ge=1,
        description="The first attempt of every training fails right after this epoch (and its "
        "checkpoint) is done: retries resume from the checkpoint (resume tests and drills)",
    )
    epoch_pause_seconds: float | None = Field(
        default=None,
        ge=0,
        description="Every epoch ends this many seconds later: a slow training, so that a fault "
        "lands in mid-training (outage tests and drills)",
    )
    shuffle_labels: float | None = Field(
        default=None,
        ge=0,
        le=1,
        description="This fraction (0 to 1) of the training labels is shuffled among themselves, "
        "seeded by the training seed: a genuinely broken recipe (drills and "
        "benchmarks/studies/gate_noise.py); the training logs a warning",
    )

    def environment(self) -> dict[str, str]:
        """The variable that hands these drills to a training process started with it."""
        return {DRILLS_ENV: self.model_dump_json(exclude_none=True)}

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Drills:
        """The drills this process was given in `DRILLS_ENV` (none when it is unset or empty);
        a value that is not a `Drills` record fails the training at its start."""
        value = (os.environ if environ is None else environ).get(DRILLS_ENV, "")
        if not value.strip():
            return cls()
        try:
            return cls.model_validate_json(value)
        except ValidationError as exc:
            raise ValueError(f"{DRILLS_ENV}={value[:200]!r} is not a drill record: {exc}") from None


def shuffle_labels(y: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """`y` with `fraction` of its entries, chosen at random, permuted among themselves."""
    if not 0 <= fraction <= 1:
        raise ValueError(
            f"{DRILLS_ENV}'s shuffle_labels must be a fraction from 0 to 1, got {fraction}"
        )
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(y), size=round(fraction * len(y)), replace=False)
    shuffled = y.copy()
    shuffled[chosen] = rng.permutation(y[chosen])
    return shuffled
