"""The typed records of an export: what is asked (`ExportRequest`), how each format compared with
the trained model (`ExportCheck`), and what was published (`ExportResult`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from compare_models.config import ExportPolicy
from compare_models.data.dataset import DatasetRef

#: A run's trained model (`layout.model_key`): the only thing an export reads as a model.
MODEL_KEY = r"^runs/[A-Za-z0-9._-]{1,128}/models/[a-z][a-z0-9_.-]{0,40}\.keras$"

ExportFormat = Literal["savedmodel", "onnx"]

#: The files of each format inside an export's folder.
FORMAT_FILES: dict[str, tuple[str, ...]] = {
    "savedmodel": ("saved_model.pb", "variables/", "fingerprint.pb", "assets/"),
    "onnx": ("model.onnx",),
}


class ExportRequest(BaseModel):
    """Which stored model to export, checked on which test split, published where: as the next
    served version of `track`'s `model` (the champion), or beside its run (`track` None: a model
    that is not its track's champion, never in the served tree)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    run_id: str = Field(pattern=r"^[A-Za-z0-9._-]{1,128}$")
    model: str = Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")
    model_key: str = Field(pattern=MODEL_KEY)
    dataset: DatasetRef
    track: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9_-]{0,63}$")
    policy: ExportPolicy = ExportPolicy()
    card_markdown: str = Field(default="", max_length=1_000_000)
    card_json: dict = Field(default_factory=dict)
    threads: int = Field(default=1, ge=1, le=256)
    store_outage_minutes: float = Field(default=0, ge=0, le=24 * 60)

    @model_validator(mode="after")
    def _the_model_is_the_runs(self) -> ExportRequest:
        if not self.model_key.startswith(f"runs/{self.run_id}/models/"):
            raise ValueError(f"the model {self.model_key} is not a model of run {self.run_id}")
        return self


class ExportCheck(BaseModel):
    """One format's predictions on the run's test images against the trained model's."""

    format: ExportFormat
    images: int = Field(ge=0)
    max_probability_difference: float = Field(ge=0)
    top1_agreement: float = Field(ge=0, le=1)
    passed: bool

    def describe(self) -> str:
        return (
            f"{self.format}: largest probability difference {self.max_probability_difference:.2e}, "
            f"top-1 identical on {100 * self.top1_agreement:.2f}% of {self.images:,} test images"
        )


class ExportInput(BaseModel):
    """What an export expects: uint8 RGB images of one size, scaled inside the model."""

    height: int = Field(gt=0)
    width: int = Field(gt=0)
    channels: Literal[3] = 3
    dtype: Literal["uint8"] = "uint8"
    channel_order: Literal["RGB"] = "RGB"
    value_range: tuple[int, int] = (0, 255)
    preprocessing: str = Field(description="what the model does to its input itself")


class ExportResult(BaseModel):
    """What an export published: where, which version (None: beside its run), each format's
    check, and the URIs of its files."""

    run_id: str
    model: str
    track: str | None
    version: int | None = Field(default=None, ge=1)
    prefix: str
    uris: dict[str, str] = Field(description="per format and file kind, its s3:// URI")
    checks: list[ExportCheck]
    input: ExportInput
    class_names: list[str]
    trained_backend: str
    trained_precision: str
    vs_trained_predictions: ExportCheck | None = Field(
        default=None,
        description="the float32 export against the predictions the run stored, when it was "
        "trained in mixed precision (for information: the check is against the model in float32)",
    )
    seconds: float = Field(ge=0)
    exported_at: str
    republished_from: int | None = Field(
        default=None, ge=1, description="the earlier version whose files it copies (a rollback)"
    )


class ExportFailed(RuntimeError):
    """An export could not be built, failed its check, or could not be published; nothing of it
    is served."""
