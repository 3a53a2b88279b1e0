"""The champion record, `champions/<track>/<model>.json`: the schema of what the gate writes.

`ChampionRecord` holds the current champion (`ChampionEntry`) and the earlier ones, newest
first (`FormerChampion`: an entry with when and by which run it was replaced).

Versions: `schema_version` counts the record's shape. A record without one was written before
the schema existed (version 0, e.g. `tests/fixtures/champion-131c45d.json`); its shape is the
same, so it reads as it is. A record from a newer version is refused with a message saying to
upgrade. Fields a newer writer added are ignored on reading.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from compare_models.statistics.records import Interval
from compare_models.storage import layout
from compare_models.storage.schema import stored_version

if TYPE_CHECKING:
    from compare_models.storage.store import ArtifactStore

#: The record's shape; bump it when a field changes meaning or a required field is added.
SCHEMA_VERSION = 1


class _Part(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ChampionMetrics(_Part):
    accuracy: float
    f1_macro: float | None = None


class ChampionData(_Part):
    """The data a champion was tested on: what makes two runs' test images the same
    (`compare_models.runs.fingerprint.DATA_IDENTITY`), and its classes. Every field may be
    missing from records written before it was kept: `class_names` before folder sources (then
    CIFAR-10's or the synthetic data's ten), `version_id` for archive sources."""

    name: str | None = None
    archive_sha256: str | None = None
    split_key: str | None = None
    split_indices_sha256: str | None = None
    test_indices_sha256: str | None = None
    version_id: str | None = None
    image_size: int | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="the side of its images; None in records before sizes: 32",
    )

    @property
    def side(self) -> int:
        """The side of its images (32 where the record is from before image sizes)."""
        return self.image_size or 32

    class_names: list[str] | None = None

    @property
    def test_images(self) -> str | None:
        """The indices of its test images (older records kept those of the whole split)."""
        return self.test_indices_sha256 or self.split_indices_sha256


class ChampionExport(_Part):
    """Where a champion is served: its export version under `exports/<track>/<model>/` and the
    URIs of its formats (`compare_models.serving`)."""

    version: int = Field(ge=1)
    prefix: str
    uris: dict[str, str] = Field(
        description="per file of the export (model.onnx, saved_model.pb, ...)"
    )
    exported_at: str
    mlflow_version: int | None = Field(
        default=None,
        ge=1,
        exclude_if=lambda value: value is None,
        description="the same model's version in the MLflow registry (`<track>-<model>`), when "
        "MLflow is on: the export's version is the counter, this one is recorded beside it",
    )


class ChampionEntry(_Part):
    """One champion: the run and model, where its model and test predictions are, the data it
    was tested on, its headline metrics, and when, why and by whom it was promoted."""

    run_id: str
    model: str
    model_key: str
    predictions_key: str
    dataset: ChampionData = Field(description="the data it was tested on")
    metrics: ChampionMetrics
    accuracy_interval: Interval | None = None
    promoted_at: str = Field(description="ISO 8601, UTC")
    reason: str
    by: str
    input_size: int | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="the side its model resized its images to (train.input_size); None: the "
        "images' own size",
    )
    # left out of the stored JSON while None, so that records written before exports read and
    # write back unchanged
    export: ChampionExport | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="its serving export (None: not exported, or before exports)",
    )

    @property
    def working_size(self) -> int:
        """The side its model works at: its input size, else its images' own."""
        return self.input_size or self.dataset.side


class FormerChampion(ChampionEntry):
    """An earlier champion: when it was replaced, and by which run."""

    replaced_at: str
    replaced_by: str


class ChampionRecord(_Part):
    """`champions/<track>/<model>.json`: the champion of one model on one track, with history."""

    schema_version: int = SCHEMA_VERSION
    model: str
    current: ChampionEntry | None = None
    history: list[FormerChampion] = Field(default_factory=list, description="newest first")

    @model_validator(mode="before")
    @classmethod
    def _version(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        stored_version(data, newest=SCHEMA_VERSION, what="champion record")
        # version 0 has today's fields: it reads as it is, and is written back as version 1
        return {**data, "schema_version": SCHEMA_VERSION}


def read(store: ArtifactStore, track: str, model: str) -> tuple[ChampionRecord | None, str | None]:
    """The champion record of `model` on `track` and its ETag (None, None: no champion yet). The
    gate writes it; serving and the CLI read it here too, through the one schema."""
    stored, etag = store.get_json_versioned(layout.champion_key(track, model))
    return (None if stored is None else ChampionRecord.model_validate(stored)), etag


def promote(record: ChampionRecord | None, entry: ChampionEntry) -> ChampionRecord:
    """The record with `entry` as champion and the old one moved to the history (None: the
    first champion)."""
    history = list(record.history) if record else []
    if record and record.current:
        former = FormerChampion(
            **dict(record.current), replaced_at=entry.promoted_at, replaced_by=entry.run_id
        )
        history.insert(0, former)
    return ChampionRecord(model=entry.model, current=entry, history=history)
