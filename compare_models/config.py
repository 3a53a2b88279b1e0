"""One typed place for configuration.

Two kinds of configuration live here:

* `Settings`: where things are (S3 endpoint, credentials, bucket, Prefect API, local
  state folder). Read from the environment or a git-ignored `.env` file, with the
  standard AWS / Prefect variable names, so pointing the project at MinIO or AWS S3 is
  a matter of environment variables. Credentials are `SecretStr`: they never print.
* `RunParams`: what a run does (data source, split protocol, models, epochs, ...).
  These are the flow's parameters; pydantic validates them at the boundary so bad
  input fails before any expensive work, with the field named.
"""

from __future__ import annotations

import copy
import math
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticUndefined
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from compare_models.models import registry
from compare_models.models.registry import DEFAULT_MODELS

#: The canonical CIFAR-10 label order (0..9).
CIFAR10_CLASSES: tuple[str, ...] = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)
IMAGE_SHAPE: tuple[int, int, int] = (32, 32, 3)
#: CIFAR-10's image side, the default of a folder source's `FolderPolicy.image_size`.
IMAGE_SIZE = IMAGE_SHAPE[0]
#: The most bytes of one stored shard of a split (`compare_models.data.shards`).
SHARD_BYTES = 128 << 20
#: The sides an image size or a model's input size may take: multiples of 32 (both models
#: halve their feature maps five times, the CNN three times before its pooling to 4x4).
IMAGE_SIZES = (32, 512)


#: The side of a square image in pixels, as sizes are given: a multiple of 32 in `IMAGE_SIZES`.
ImageSide = Annotated[int, Field(ge=IMAGE_SIZES[0], le=IMAGE_SIZES[1], multiple_of=32)]


def image_shape(size: int) -> tuple[int, int, int]:
    """The shape of one RGB image of side `size`."""
    return (size, size, 3)


NUM_CLASSES = len(CIFAR10_CLASSES)

#: The official CIFAR-10 python tarball and its published MD5.
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
CIFAR10_MD5 = "c58f30108f718f92721af3b95e74349a"

#: Run ids become S3 prefixes and flow-run names: a conservative character set.
RUN_ID_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"


def project_root() -> Path:
    """The repository root (this file lives in <root>/compare_models/)."""
    return Path(__file__).resolve().parent.parent


# ── Settings: where things are ────────────────────────────────────────────────


def _env(
    variable: str, default: Any = PydanticUndefined, description: str | None = None, **field: Any
) -> Any:
    """A settings field read from the environment variable `variable` (or the env file);
    `field` carries pydantic's other `Field` arguments (bounds, pattern, default_factory)."""
    return Field(default=default, validation_alias=variable, description=description, **field)


class Settings(BaseSettings):
    """Environment-driven settings. Every field has the name users already know."""

    model_config = SettingsConfigDict(env_file_encoding="utf-8", extra="ignore")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """The env file is chosen when settings are made, not when this module is imported:
        COMPARE_MODELS_ENV_FILE, else the project's .env."""
        env_file = os.environ.get("COMPARE_MODELS_ENV_FILE", str(project_root() / ".env"))
        dotenv = DotEnvSettingsSource(settings_cls, env_file=env_file)
        return init_settings, env_settings, dotenv, file_secret_settings

    s3_endpoint_url: str | None = Field(
        default=None,
        validation_alias=AliasChoices("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"),
        description="S3 endpoint; unset means AWS S3 itself.",
    )
    aws_access_key_id: SecretStr | None = _env("AWS_ACCESS_KEY_ID", None, "S3 access key")
    aws_secret_access_key: SecretStr | None = _env(
        "AWS_SECRET_ACCESS_KEY", None, "S3 secret key (never logged or published)"
    )
    aws_region: str = Field(
        default="us-east-1",
        validation_alias=AliasChoices("AWS_REGION", "AWS_DEFAULT_REGION"),
        description="S3 region",
    )
    bucket: str = _env(
        "COMPARE_MODELS_BUCKET",
        "compare-models",
        "The bucket every run, dataset and champion is in",
    )
    prefect_api_url: str | None = _env(
        "PREFECT_API_URL", None, "The Prefect server's API (`compare-models up`: port 4200)"
    )
    prefect_ui_url: str | None = _env(
        "PREFECT_UI_URL", None, "The Prefect UI's base URL; unset means the API URL without /api"
    )
    prefect_api_auth_string: SecretStr | None = _env(
        "PREFECT_API_AUTH_STRING",
        None,
        "`user:password` the Prefect API requires (PREFECT_SERVER_API_AUTH_STRING on the server); "
        "`compare-models up --auth` generates one for the local server",
    )
    home: Path = _env(
        "COMPARE_MODELS_HOME",
        description="Git-ignored folder for local service data, logs and caches.",
        default_factory=lambda: project_root() / ".compare-models",
    )
    presign_seconds: int = _env(
        "COMPARE_MODELS_PRESIGN_SECONDS",
        7 * 24 * 3600,
        "Lifetime of presigned links; S3 caps it at 7 days",
        gt=0,
        le=7 * 24 * 3600,
    )
    public_s3_url: str | None = _env(
        "COMPARE_MODELS_PUBLIC_S3_URL",
        None,
        "S3 endpoint a person's browser reaches (e.g. http://localhost:9000), used only to presign "
        "report and model links; unset means the endpoint the workers use",
    )
    warm_processes: bool = _env(
        "COMPARE_MODELS_WARM_PROCESSES",
        True,
        "Start trainings, re-scorings and exports as forks of a process that has imported Keras "
        "already (one per backend and environment, kept by the process that starts them), not "
        "as fresh interpreters that import it again",
    )
    allow_gpu_less_training: bool = _env(
        "COMPARE_MODELS_ALLOW_CPU_TRAINING",
        False,
        "Let a train-model run on the GPU pool train on the CPU when it sees no GPU",
    )
    alert_webhook_url: SecretStr | None = _env(
        "COMPARE_MODELS_ALERT_WEBHOOK_URL",
        None,
        "Where `compare-models deploy` points the regression notification (Slack or any HTTP "
        "endpoint); a secret, since webhook URLs carry their own token",
    )
    imagenet_weights_md5: str = _env(
        "COMPARE_MODELS_IMAGENET_WEIGHTS_MD5",
        "4d473c1dd8becc155b73f8504c6f6626",
        "MD5 the downloaded ImageNet weights must have (Keras' published hash; set it with a mirror's file)",
        pattern=r"^[0-9a-fA-F]{32}$",
    )
    allow_private_urls: bool = _env(
        "COMPARE_MODELS_ALLOW_PRIVATE_URLS",
        False,
        "Let http(s) data and weights sources point at loopback, link-local or private addresses",
    )
    shard_cache_gib: float = _env(
        "COMPARE_MODELS_SHARD_CACHE_GIB",
        20.0,
        "The most disk the local copies of datasets' shards may take on a worker (GiB); the "
        "least recently used are removed first, never one a process on the worker is reading",
        gt=0,
        le=1 << 20,
    )
    mlflow_tracking_uri: str | None = _env(
        "MLFLOW_TRACKING_URI",
        None,
        "The MLflow tracking server runs and champions are logged to (http:// or https://); "
        "unset or empty: MLflow is off. Its credentials, if any, go in MLflow's own "
        "MLFLOW_TRACKING_USERNAME / MLFLOW_TRACKING_PASSWORD / MLFLOW_TRACKING_TOKEN",
    )
    mlflow_timeout_s: float = _env(
        "COMPARE_MODELS_MLFLOW_TIMEOUT_S",
        10.0,
        "How long one MLflow request may take before MLflow counts as down for the rest of the "
        "process (seconds); a run never waits longer than about twice this on MLflow",
        gt=0,
        le=300,
    )
    imagenet_weights_url: str = _env(
        "COMPARE_MODELS_IMAGENET_WEIGHTS_URL",
        "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
        "resnet50_weights_tf_dim_ordering_tf_kernels_notop.h5",
        "Where Keras' ResNet50 ImageNet weights are downloaded from (a mirror may be set)",
    )

    @field_validator("mlflow_tracking_uri")
    @classmethod
    def _empty_is_off(cls, value: str | None) -> str | None:
        return value.strip() or None if value is not None else None

    @field_validator("bucket")
    @classmethod
    def _bucket_name(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", value):
            raise ValueError(
                f"bucket name {value!r} is not a valid S3 bucket name: use 3-63 lowercase "
                "letters, digits, dots or dashes (set COMPARE_MODELS_BUCKET)"
            )
        return value

    @property
    def ui_url(self) -> str | None:
        """The Prefect UI base URL (derived from the API URL unless set)."""
        if self.prefect_ui_url:
            return self.prefect_ui_url.rstrip("/")
        if self.prefect_api_url:
            return self.prefect_api_url.rstrip("/").removesuffix("/api")
        return None

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"


# ── Run parameters: what a run does ───────────────────────────────────────────


@dataclass(frozen=True)
class Shortcut:
    """A short command-line flag for a nested field, besides its dotted one: `--epochs` for
    `--train.epochs`. `compare-models run` and `params` derive every flag from these models
    (compare_models.cli.run_options); a shortcut is declared here, on its field, and nowhere else."""

    flag: str


class TrainingRuntime(BaseSettings):
    """How a training process computes: the worker's environment (its deployment's job
    variables, the image), never a run parameter, since none of it changes what a run means,
    only how fast it gets there. Every value is recorded in the training's `device` (the run's
    fingerprint). The backend itself is Keras' own KERAS_BACKEND (`compare_models.training.backend`).
    Read from the process's environment only (a .env file would not reach Keras' variable)."""

    model_config = SettingsConfigDict(extra="ignore")

    precision: Literal["float32", "mixed_float16", "mixed_bfloat16"] | None = _env(
        "COMPARE_MODELS_PRECISION",
        None,
        "Keras precision policy; unset: mixed_float16 on a GPU, float32 on the CPU",
    )
    jit_compile: Literal["auto", "true", "false"] = _env(
        "COMPARE_MODELS_JIT_COMPILE",
        "auto",
        "XLA compilation of the training step (Keras' `jit_compile`; auto: Keras decides, which "
        "is on for JAX)",
    )
    steps_per_execution: int = _env(
        "COMPARE_MODELS_STEPS_PER_EXECUTION",
        1,
        "Training steps per compiled call (Keras' `steps_per_execution`); per-batch callbacks "
        "then see every n-th batch",
        ge=1,
        le=1000,
    )
    in_memory_mib: int = _env(
        "COMPARE_MODELS_IN_MEMORY_MIB",
        256,
        "A training split of at most this many MiB of pixels (uint8) is read into memory whole "
        "and trains as it always has; a larger one streams from its shards in the local cache, "
        "batch by batch (0: always stream). Under JAX both give the same batches",
        ge=0,
        le=1 << 20,
    )
    input_workers: int = _env(
        "COMPARE_MODELS_INPUT_WORKERS",
        1,
        "Threads preparing training batches ahead of the step under JAX (1: in the training "
        "loop); TensorFlow's tf.data pipeline prefetches on its own",
        ge=1,
        le=64,
    )

    xla_cache_mib: int = _env(
        "COMPARE_MODELS_XLA_CACHE_MIB",
        1024,
        "Under JAX, XLA's compiled programs are kept on the worker's disk (`<home>/cache/xla`, "
        "the least recently used dropped past this many MiB) and a later training or re-scoring "
        "of the same model, shapes and libraries loads them instead of compiling again "
        "(0: off)",
        ge=0,
        le=1 << 20,
    )

    @property
    def jit(self) -> bool | str:
        """`jit_compile` as Keras takes it."""
        return {"true": True, "false": False}.get(self.jit_compile, "auto")


class SplitFractions(BaseModel):
    """The `hash` protocol's shares of the images, in train / validation / test order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train: float = Field(default=0.7, gt=0, lt=1)
    val: float = Field(default=0.1, ge=0, lt=1)
    test: float = Field(default=0.2, gt=0, lt=1)

    @model_validator(mode="after")
    def _sum_to_one(self) -> SplitFractions:
        if abs(self.train + self.val + self.test - 1) > 1e-9:
            raise ValueError(
                f"split fractions {self.train} + {self.val} + {self.test} must add up to 1 "
                "(e.g. train 0.7, val 0.1, test 0.2)"
            )
        return self


class SplitSpec(BaseModel):
    """How the archive's images become train / validation / test splits.

    protocol:
      * ``seed``: the reference report's protocol: 25,000 training images, split
        16,250 train / 8,750 validation, and the full test set.
      * ``full``: 45,000 / 5,000 / full test set.
      * ``sizes``: explicit ``train`` / ``val`` / ``test`` sizes.
      * ``hash``: for folders of images, whose content grows: each image's split comes from
        a hash of its bytes salted with ``seed``, bucketed by ``fractions``; an image keeps its
        split in every later version of the data, and exact duplicates share one. Where the
        folder has fixed ``train/`` and ``test/`` folders, test images always stay test and
        the training folder's images are hashed into train and validation. A folder source
        given the default ``seed`` protocol is split this way.
    `seed`, `full` and `sizes` are stratified and reproducible from ``seed``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    protocol: Annotated[Literal["seed", "full", "sizes", "hash"], Shortcut("--split")] = Field(
        default="seed",
        description="Split protocol (a folder of images is split by hash, the default for it)",
    )
    train: Annotated[int | None, Shortcut("--train-size")] = Field(
        default=None,
        ge=NUM_CLASSES,
        le=1_000_000,
        description="Training images (protocol 'sizes'); at least one image per class",
    )
    val: Annotated[int | None, Shortcut("--val-size")] = Field(
        default=None,
        ge=NUM_CLASSES,
        le=1_000_000,
        description="Validation images (protocol 'sizes')",
    )
    test: Annotated[int | None, Shortcut("--test-size")] = Field(
        default=None, ge=NUM_CLASSES, le=1_000_000, description="Test images (protocol 'sizes')"
    )
    seed: int = Field(default=42, ge=0, le=2**32 - 1, description="Seed of the split")
    fractions: SplitFractions = Field(
        default=SplitFractions(), description="The `hash` protocol's train / val / test shares"
    )

    @model_validator(mode="after")
    def _sizes_given(self) -> SplitSpec:
        given = [v is not None for v in (self.train, self.val, self.test)]
        if self.protocol == "sizes" and not all(given):
            raise ValueError(
                "split protocol 'sizes' needs train, val and test sizes (e.g. --train 2000 --val 500 --test 1000)"
            )
        if self.protocol != "sizes" and any(given):
            raise ValueError(
                f"split protocol {self.protocol!r} fixes the sizes; use protocol 'sizes' to set them"
            )
        return self

    def sizes(self, test_available: int) -> tuple[int, int, int]:
        """(train, val, test) sizes for this protocol (not `hash`, whose sizes follow the data)."""
        if self.protocol == "seed":
            return 16_250, 8_750, test_available
        if self.protocol == "full":
            return 45_000, 5_000, test_available
        if self.protocol == "hash":
            raise ValueError("the 'hash' protocol has fractions, not sizes")
        return self.train, self.val, self.test  # type: ignore[return-value]

    def identity(self) -> dict[str, Any]:
        """What decides the split: the fractions only where they are used, so that the
        archives' protocols keep the keys (and the prepared splits) they had before `hash`."""
        return self.model_dump(exclude=None if self.protocol == "hash" else {"fractions"})


class FolderPolicy(BaseModel):
    """How a folder of images is read and what it must hold for a run to go on (image-folder
    sources only).

    A file that cannot be used (not an image, too large, outside a class folder, hostile) is
    skipped and listed in the dataset version with its reason; the run fails only when more
    than `max_skipped_fraction` of the files are skipped or a class has fewer than
    `min_images_per_class` images."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_skipped_fraction: float = Field(
        default=0.01,
        ge=0,
        le=1,
        description="The share of the folder's files that may be skipped before the run fails",
    )
    min_images_per_class: int = Field(
        default=10, ge=1, le=1_000_000, description="Fewer images in a class fail the run"
    )
    max_image_bytes: int = Field(
        default=20 << 20,
        ge=1 << 10,
        le=256 << 20,
        description="A larger image file is skipped (bytes)",
    )
    max_files: int = Field(
        default=1_000_000,
        ge=1,
        le=10_000_000,
        description="A folder with more files is refused before any is read",
    )
    image_size: Annotated[ImageSide, Shortcut("--image-size")] = Field(
        default=IMAGE_SIZE,
        description="The side, in pixels, every image of the folder is resized to (square, a "
        "multiple of 32 from 32 to 512): part of the dataset version, so each size is a version "
        "of its own (docs/guides/image-size.md)",
    )


class TrainParams(BaseModel):
    """Hyper-parameters shared by both models (defaults: the report's)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    epochs: Annotated[int, Shortcut("--epochs")] = Field(
        default=10, gt=0, le=1000, description="Training epochs of each model"
    )
    batch_size: Annotated[int, Shortcut("--batch-size")] = Field(
        default=128, gt=0, le=65536, description="Images per training step"
    )
    optimizer: Annotated[Literal["adam", "sgd", "rmsprop", "adamw"], Shortcut("--optimizer")] = (
        "adam"
    )
    learning_rate: Annotated[float, Shortcut("--learning-rate")] = Field(
        default=1e-3, gt=0, le=1e4, description="The optimizer's initial learning rate"
    )
    lr_schedule: Literal["constant", "cosine"] = Field(
        default="cosine",
        description="'cosine' decays the learning rate to 0 over the run; 'constant' keeps it",
    )
    augment: Literal["none", "flip"] = Field(
        default="flip",
        description="'flip': random horizontal flips of training images (outside the model)",
    )
    threads: Annotated[int, Shortcut("--threads")] = Field(
        default=0,
        ge=0,
        le=1024,
        description="TF intra-op threads per training process; 0 = share of cores",
    )
    input_size: Annotated[ImageSide | None, Shortcut("--input-size")] = Field(
        default=None,
        description="The side the model resizes its images to inside itself (keras Resizing, "
        "bilinear) before its first layer, e.g. {'resnet50': {'input_size': 128}} in "
        "train_per_model; unset: the dataset's image size, as the report trained",
    )
    seed: Annotated[int, Shortcut("--seed")] = Field(
        default=42,
        ge=0,
        le=2**32 - 1,
        description="Seed of the training (replica r trains with seed + r); on the command line, "
        "also the seed of a split the flags choose",
    )
    replicas: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Train each model this many times, with seeds seed, seed+1, ...: the run keeps the "
        "replica best on validation data, and the spread across seeds is the recipe's own noise",
    )

    def check_replica_seeds(self, model: str) -> None:
        """Replica r trains with seed + r: every one of them must be a valid seed."""
        if self.seed + self.replicas - 1 > 2**32 - 1:
            raise ValueError(
                f"{model}: seed {self.seed} with {self.replicas} replicas needs seeds up to "
                f"{self.seed + self.replicas - 1}, past the largest seed {2**32 - 1}: choose a smaller seed"
            )


class ExecutionParams(BaseModel):
    """Where trainings run and how failures are retried."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    trainer: Annotated[Literal["local", "deployment"], Shortcut("--trainer")] = Field(
        default="local",
        description="'local': each model in a subprocess of the flow's process; 'deployment': one "
        "train-model/gpu flow run per model on the GPU work pool",
    )
    schedule: Annotated[
        Literal["auto", "parallel", "weighted", "sequential"], Shortcut("--schedule")
    ] = Field(
        default="auto",
        description="How local trainings share this host's cores: 'parallel' (at once, cores split evenly), "
        "'weighted' (at once, cores split by each model's cost), 'sequential' (one after the other, all cores "
        "each), 'auto' (the best measured here: see benchmarks/speed/schedule.py). Deployment trainings always run at "
        "once, one flow run each: a CPU worker splits its cores by model cost, or evenly with 'parallel'",
    )
    retries: Annotated[int, Shortcut("--retries")] = Field(
        default=2,
        ge=0,
        le=20,
        description="Retries of a failed training; each resumes from its last checkpoint",
    )
    retry_delay_seconds: Annotated[float, Shortcut("--retry-delay-seconds")] = Field(
        default=10.0,
        ge=0,
        le=3600,
        description="Delay before the first retry; each later one waits twice as long as the one "
        "before (Prefect's exponential_backoff), spread by retry_jitter_factor",
    )
    retry_jitter_factor: float = Field(
        default=0.5,
        ge=0,
        le=10,
        description="Each retry's delay varies at random by up to this fraction of it (Prefect's "
        "retry_jitter_factor), so that trainings that failed together do not retry together",
    )
    store_outage_minutes: Annotated[float, Shortcut("--store-outage-minutes")] = Field(
        default=15,
        gt=0,
        le=24 * 60,
        description="How long the run waits out an unreachable object store: its reads and writes are "
        "retried with backoff for this long, checkpoints are uploaded in the background meanwhile, and a "
        "training fails only when its final model cannot be published within it",
    )
    api_outage_minutes: float = Field(
        default=5,
        gt=0,
        le=60,
        description="How long a training process retries Prefect API calls (logs, states) through an "
        "outage of the Prefect server (sets PREFECT_CLIENT_MAX_RETRIES for it)",
    )
    poll_seconds: float = Field(
        default=1.0, gt=0, le=60, description="How often to poll a child flow run's state"
    )
    time_budget_minutes: Annotated[float | None, Shortcut("--time-budget-minutes")] = Field(
        default=None,
        gt=0,
        le=7 * 24 * 60,
        description="Wall-clock budget of the run from its start: trainings stop at the end of the epoch in which it "
        "runs out, keep their checkpoint, and the run completes with the models it has, marked 'stopped by budget'. "
        "A later run with the same run_id (and a larger or no budget) continues from the checkpoints",
    )
    training_timeout_minutes: float = Field(
        default=24 * 60,
        gt=0,
        le=7 * 24 * 60,
        description="Longest one training attempt may run; then its process (or its flow run on the GPU "
        "pool) is stopped and the attempt fails (a retry resumes from the last checkpoint)",
    )

    def prefect_client_retries(self) -> int:
        """PREFECT_CLIENT_MAX_RETRIES for a client that rides out `api_outage_minutes` of Prefect
        API outage: Prefect's client waits 2, 4, 8, ... s between its tries (plus jitter), so n
        retries span 2**(n+1) - 2 s (never fewer than Prefect's default 5)."""
        return max(5, math.ceil(math.log2(60 * self.api_outage_minutes + 2)) - 1)

    start_timeout_seconds: float = Field(
        default=1800,
        gt=0,
        le=86400,
        description="How long a training flow run may wait for a GPU-pool worker to start it before the attempt fails",
    )


class ComparisonParams(BaseModel):
    """How the models of a run are compared (paired statistics on the same test images)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    resamples: int = Field(
        default=2000,
        ge=1000,
        le=100_000,
        description="Paired bootstrap resamples for the intervals",
    )
    seed: int = Field(default=0, ge=0, description="Seed of the bootstrap resampling")
    confidence: float = Field(
        default=0.95, gt=0.5, lt=1, description="Confidence level of the intervals"
    )
    alpha: float = Field(
        default=0.05,
        gt=0,
        lt=0.5,
        description="Significance level of McNemar's test (Holm-corrected per class)",
    )


class NoisePolicy(BaseModel):
    """How the gate tells retraining noise from a regression: a band around the champion's
    accuracy that a challenger must leave, worse or better, before it counts.

    The band is a `coverage` prediction interval for the difference between two runs of the
    recipe: Student's t quantile with n - 1 degrees of freedom x sqrt(2) x the standard
    deviation of n accuracies of the recipe, so that a small sample gives a wide band. The
    accuracies are the run's replicas when it has two or more, else the track's recent
    comparable runs that were no regression (at least `min_history` of them, the last
    `trend_runs`), else the typed tolerances below. Each class has its own band, from the same
    sources, on its recall.

    On a folder that grows, the history's accuracies rise with the data, so their spread
    measures the rise, not the noise. There (`curve`), once the track's runs of one recipe span
    at least two versions of the folder, the band comes from the runs' scatter around their
    learning curve, accuracy against training images (`compare_models.statistics.
    learning_curve`), and a challenger far below the curve's prediction at tonight's size is a
    regression even when it beats the champion. Until the curve has `curve_min_runs` runs, the
    tolerance serves; a class's band then comes from the run's own predictions
    (`class_band`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        default=True, description="Off: every significant difference counts (no band)"
    )
    coverage: float = Field(
        default=0.95,
        ge=0.5,
        lt=1,
        description="How much of the recipe's own run-to-run spread the band covers",
    )
    min_history: int = Field(
        default=3,
        ge=2,
        le=500,
        description="Comparable earlier runs of the track needed to estimate the band from them",
    )
    # The defaults are about two standard deviations of the difference between two smoke runs
    # (1,000 test images, about 100 a class) that differ only in their seed: six seeds' accuracies
    # had a standard deviation of 2.2 points at 5 epochs and 2.7 at 15 (difference: x sqrt(2),
    # 3.1 and 3.9), and a class's recall moved by up to 28 points between seeds
    # (`benchmarks/studies/gate_noise.py`; docs/benchmarks.md).
    tolerance_points: float = Field(
        default=8.0,
        ge=0,
        le=100,
        description="The band in accuracy points when there are neither replicas nor enough history",
    )
    class_tolerance_points: float = Field(
        default=40.0,
        ge=0,
        le=100,
        description="A class's band in recall points when there are neither replicas nor enough history",
    )
    curve: bool = Field(
        default=True,
        description="On a folder that grows: the band from the runs' scatter around their learning "
        "curve, and a challenger far below the curve's prediction is a regression",
    )
    curve_min_runs: int = Field(
        default=4,
        ge=3,
        le=500,
        description="Runs of the recipe on at least two versions of the folder needed to fit the "
        "learning curve",
    )
    curve_form: Literal["auto", "power-law", "log-linear"] = Field(
        default="auto",
        description="'power-law': a - b*n^-c (from 6 runs on 3 sizes); 'log-linear': a + b*ln(n); "
        "'auto': the power law once it has the runs, else log-linear",
    )
    class_band: Literal["predictions", "tolerance"] = Field(
        default="predictions",
        description="A class's band while the history is short: 'predictions' estimates it from the "
        "run's own test predictions (each class's test count, its uncertain images and the model's "
        "bias towards some classes); 'tolerance' uses class_tolerance_points",
    )


class ExportPolicy(BaseModel):
    """What the gate publishes when a track's champion changes: the champion as the next served
    version under `exports/<track>/<model>/` (`compare_models.serving`), in each format, once
    it has been checked against the trained model on the run's test images."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        default=True, description="Export each new champion for serving (SavedModel and ONNX)"
    )
    formats: tuple[Literal["savedmodel", "onnx"], ...] = Field(
        default=("savedmodel", "onnx"),
        min_length=1,
        description="Serving formats: TF SavedModel (TF Serving) and ONNX (Triton, onnxruntime)",
    )
    max_probability_difference: float = Field(
        default=1e-4,
        gt=0,
        le=1,
        description="Largest difference of any class probability between an export and the "
        "trained model, on the run's test images, for the export to be published",
    )
    min_top1_agreement: float = Field(
        default=1.0,
        ge=0.5,
        le=1,
        description="Share of test images on which an export's top-1 class must equal the "
        "trained model's",
    )
    timeout_s: int = Field(
        default=3600, ge=60, le=86400, description="How long one export and its check may take"
    )


class PredictParams(BaseModel):
    """The parameters of a batch prediction (`batch-predict`): whose champion scores which
    folder of images."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    track: str = Field(
        default="main",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description="The track whose champion scores the images",
    )
    model: str = Field(
        default="cnn", pattern=r"^[a-z][a-z0-9_-]{0,31}$", description="The champion's model"
    )
    source: str | None = Field(
        default=None,
        max_length=2048,
        description="A local directory or s3://bucket/prefix/ of images (flat, or in class "
        "folders); default: the bucket's incoming/<track>/",
    )
    folder: FolderPolicy = FolderPolicy()


class GatePolicy(BaseModel):
    """How each new model (the challenger) is judged against its champion, the model in use.

    The champion of a model is kept per `track` (the nightly runs, a smoke test, your own
    experiments each have their own). Decisions, from McNemar's exact test and the per-class
    tests (Holm-corrected) on the same test images:

    * promote when the challenger is significantly better (p < alpha) and its accuracy is
      higher by more than the noise band and by at least `min_improvement`;
    * regression when it is significantly worse by more than the band, overall or (with
      `class_regressions`) in any class (by more than that class's band), or, on a folder that
      grows, when its accuracy is below the learning curve's prediction at tonight's training
      images by more than the curve's interval (`NoisePolicy.curve`), even if it beats the
      champion;
    * within-noise when it is significantly worse, but within the band: not promoted, no alert;
    * otherwise keep the champion: no significant change.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(
        default=True, description="Judge this run's models against their champions"
    )
    track: Annotated[str, Shortcut("--track")] = Field(
        default="main",
        pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$",
        description="Which champions: each track has its own (e.g. nightly, smoke)",
    )
    alpha: float = Field(default=0.05, gt=0, lt=0.5, description="Significance level of the tests")
    min_improvement: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="Least accuracy gain (a fraction: 0.01 = 1 point) that can promote",
    )
    class_regressions: bool = Field(
        default=True, description="A significantly worse class is a regression too"
    )
    fail_on_regression: bool = Field(
        default=False, description="Fail the flow run on a regression (it is still published)"
    )
    trend_runs: int = Field(
        default=20,
        ge=2,
        le=500,
        description="Runs shown in the report's accuracy trend, and the history the noise band uses",
    )
    noise: NoisePolicy = NoisePolicy()
    export: ExportPolicy = ExportPolicy()


class RunParams(BaseModel):
    """The parameters of one compare-models run."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    data: str = Field(
        default="cifar10",
        description="'cifar10' (official download), a URL, a local path or s3:// URI of the CIFAR-10 "
        "python tarball or of a .tar.gz of class-named image folders; a folder of images "
        "(a local directory or an s3://bucket/prefix/ ending in '/': <class>/<image> or "
        "train|test/<class>/<image>); 'version:<id>', a stored dataset version; or 'synthetic[:N]'.",
    )
    data_sha256: str | None = Field(
        default=None, description="Expected SHA-256 of the archive, verified before use"
    )
    split: SplitSpec = SplitSpec()
    folder: FolderPolicy = FolderPolicy()
    skip_if_unchanged: bool = Field(
        default=False,
        description="Skip training when the data has not changed since the champion's (folder sources)",
    )
    models: tuple[str, ...] = Field(
        default=DEFAULT_MODELS,
        description="Registered model names (compare_models.models.registry), e.g. cnn, resnet50",
    )
    train: TrainParams = TrainParams()
    train_per_model: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="Changes to `train` for one model, e.g. {'cnn': {'epochs': 6}}: that model trains "
        "with them, on the same images (models this run does not train are ignored)",
    )
    execution: ExecutionParams = ExecutionParams()
    resnet_weights: str = Field(
        default="imagenet",
        description="'imagenet', 'none', or a path / s3:// URI of a weights file",
    )
    comparison: ComparisonParams = ComparisonParams()
    gate: GatePolicy = GatePolicy()
    run_id: str | None = Field(default=None, description="Defaults to a fresh, unique id")
    replay_of: str | None = Field(
        default=None,
        description="Run id this run replays: its predictions are compared with that run's, image by image",
    )
    preset: str | None = Field(
        default=None,
        description="The named parameter set (PRESETS: smoke, demo, seed, full) the others change; "
        "`compare-models run` and `params` start from seed",
    )

    @field_validator("models", mode="before")
    @classmethod
    def _models(cls, value: object) -> object:
        if isinstance(value, str):
            value = [v.strip() for v in value.split(",") if v.strip()]
        known = registry.models()
        unknown = [m for m in value if m not in known]  # type: ignore[union-attr]
        if unknown:
            raise ValueError(f"unknown model name(s) {unknown}; choose from {sorted(known)}")
        if not value:
            raise ValueError(f"no model selected; choose from {sorted(known)}")
        return tuple(dict.fromkeys(value))  # type: ignore[arg-type]

    @model_validator(mode="after")
    def _train_per_model(self) -> RunParams:
        known = registry.models()
        unknown = [m for m in self.train_per_model if m not in known]
        if unknown:
            raise ValueError(
                f"train_per_model names unknown model(s) {unknown}; choose from {sorted(known)}"
            )
        for model in dict.fromkeys([*self.train_per_model, *self.models]):
            self.train_for(model).check_replica_seeds(model)
        return self

    def train_for(self, model: str) -> TrainParams:
        """The training parameters of `model`: `train` with its `train_per_model` changes."""
        changes = self.train_per_model.get(model)
        if not changes:
            return self.train
        try:
            return TrainParams.model_validate({**self.train.model_dump(), **changes})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()
            )
            raise ValueError(f"train_per_model[{model!r}]: {problems}") from None

    def epochs_text(self) -> str:
        """ "3" when every model trains as many epochs, else "6 (cnn), 3 (resnet50)"."""
        epochs = {m: self.train_for(m).epochs for m in self.models}
        if len(set(epochs.values())) == 1:
            return str(next(iter(epochs.values())))
        return ", ".join(f"{n} ({m})" for m, n in epochs.items())

    def per_model_training(self) -> str:
        """The models' own training settings (`train_per_model`), e.g. "cnn: epochs 6"."""
        return "; ".join(
            f"{m}: " + ", ".join(f"{k} {v}" for k, v in self.train_per_model[m].items())
            for m in self.models
            if self.train_per_model.get(m)
        )

    @field_validator("run_id", "replay_of")
    @classmethod
    def _run_id(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(RUN_ID_PATTERN, value):
            raise ValueError("run_id may hold only letters, digits, '.', '_' and '-' (at most 128)")
        return value

    @field_validator("data_sha256")
    @classmethod
    def _sha(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[0-9a-fA-F]{64}", value):
            raise ValueError("data_sha256 must be 64 hexadecimal characters")
        return value.lower() if value else value


#: Named parameter sets. ``smoke`` is small enough for a laptop CPU in a few minutes.
PRESETS: dict[str, dict] = {
    "smoke": {
        "split": {"protocol": "sizes", "train": 2000, "val": 500, "test": 1000},
        "train": {"epochs": 1},
        "gate": {"track": "smoke"},
    },
    # A first run that visibly learns in a few minutes on a 2-core CPU: `make demo`. The CNN
    # costs about a fifth of ResNet50 per image, so it trains more epochs in the same time.
    "demo": {
        "split": {"protocol": "sizes", "train": 5000, "val": 1000, "test": 2000},
        "train": {"epochs": 2, "batch_size": 32},
        "train_per_model": {"cnn": {"epochs": 6}},
        "gate": {"track": "demo"},
    },
    "seed": {"split": {"protocol": "seed"}, "gate": {"track": "seed"}},
    "full": {"split": {"protocol": "full"}, "gate": {"track": "full"}},
}


def preset_params(name: str, **overrides: object) -> RunParams:
    """RunParams from a preset, with explicit overrides (nested dicts merge)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    merged: dict = copy.deepcopy(PRESETS[name])
    per_model = merged.get("train_per_model", {})
    if isinstance(overrides.get("train"), dict):
        # an explicit setting (e.g. --epochs) holds for every model: the preset's per-model
        # values of the same settings give way
        per_model = {
            model: {k: v for k, v in changes.items() if k not in overrides["train"]}
            for model, changes in per_model.items()
        }
    if isinstance(overrides.get("train_per_model"), dict):  # merged model by model
        for model, changes in overrides["train_per_model"].items():
            per_model[model] = {**per_model.get(model, {}), **dict(changes)}
    merged["train_per_model"] = per_model
    for key, value in overrides.items():
        if key == "train_per_model":
            continue
        if isinstance(value, dict):
            base = dict(merged.get(key, {}))
            if key == "split" and "protocol" in value:
                base = {}
            base.update(value)
            merged[key] = base
        else:
            merged[key] = value
    merged["preset"] = name
    return RunParams.model_validate(merged)
