"""The object-store layout: every S3 key this project reads or writes, in one place.

Users browse and script against these keys, so they are part of the interface (the
README's "What a run stores" table is this module in prose). No other module spells a key.

    datasets/_sources/<sha256 of the source location>.json   where a URL / s3:// source was cached
    datasets/<name>/<archive sha256>/raw/<file>               the raw archive, stored once
    datasets/<name>/<archive sha256>/splits/<split key>/      shards/ (below), prepared.json (last);
                                                              {train,val,test}.npz before shards
    datasets/_versions/<version id>/version.json              a folder source's version: a row per image (write-once)
    datasets/_versions/<version id>/summary.json              its counts, for listings (write-once)
    datasets/_folders/<sha256 of the source>/latest.json      the newest version of a folder source
                                       (latest-<size>.json)   (at image size 32; at another size)
    datasets/_pixels/<size>x<size>/<sha256>.npz               decoded images, keyed by their files' SHA-256
    datasets/<name>/<version id>/splits/<split key>/          a version's splits, as for an archive
    .../splits/<split key>/shards/<split>/<sha256>.array_record   a split's shards (ArrayRecord, write-once)
    .../splits/<split key>/shards/<split>/labels-<sha256>.npy     its labels, in the shards' order
    .../splits/<split key>/damaged.json                       shards a reader found damaged (rebuilt next run)
    weights/keras/<file>                                      Keras' ImageNet weights, cached
    weights/sha256/<sha256>/<file>                            a user's weights file
    runs/latest.json                                          the newest completed run
    runs/<run>/claim.json                                     the flow run writing this run (claimed first)
    runs/<run>/manifest.json                                  written last: the run is complete
    runs/<run>/previous/manifest-<time>.json                  a budget-stopped manifest, kept when continued
    runs/<run>/models/<name>.keras                            trained models
    runs/<run>/training/<name>/history.json                   per-epoch history + training result
    runs/<run>/training/<name>/predictions.npz                test-set probabilities
    runs/<run>/checkpoints/<name>/{epoch-NNNN.keras,state.json}   resumable state, removed on success
    runs/<run>/metrics/<name>.json, <name>_<table>.csv        scikit-learn metrics
    runs/<run>/metrics/comparison.json                        the paired comparison of the models
    runs/<run>/metrics/replay.json                            a replay against its original run
    runs/<run>/rescored/<champion run>/<name>.npz             a champion's predictions on this run's test images
    runs/<run>/report/index.html, *.png, *.csv                the report
    champions/<track>/<model>.json                            the champion of a model, with its history
    exports/<track>/<model>/<version>/                        a champion's serving export: saved_model.pb,
                                                              variables/, model.onnx, labels.txt, model_card.{md,json},
                                                              export.json (written last: the version is complete)
    exports/<track>/<model>/config.pbtxt                      Triton's configuration of the ONNX model
    exports/<track>/<model>/claims/<version>.json             a version's claim (write-once: versions only grow)
    exports/_runs/<run>/<model>/                              a by-hand export of a model that is not the champion
    predictions/<track>/<model>/<version>/<source digest>/    batch predictions of a source by a served version:
                                                              predictions.parquet, predictions.csv, summary.json (last)
    incoming/<track>/                                         the default source of the batch prediction a promotion triggers

`exports/<track>/<model>/` is TF Serving's `model_base_path` (the highest integer version is
served) and `exports/<track>/` a Triton model repository; neither reads the non-numeric
`claims/`.

A training's `<name>` is its model's name, or with `train.replicas` > 1 for every replica but
the first `<model>.r<k>` (`training_name`): `cnn`, `cnn.r1`, `cnn.r2`. A registered model name
holds no '.' (`registry.NAME`), so the names of two trainings never collide.
"""

from __future__ import annotations

import hashlib
import re

from compare_models.models import registry

MANIFEST = "manifest.json"
LATEST = "runs/latest.json"
RUNS = "runs/"

# ── runs ──────────────────────────────────────────────────────────────────────

#: A training's name (`training_name`): a registered model name (`registry.NAME`), then for
#: replica k >= 1 of that model `.r<k>` (k without leading zeros).
TRAINING_NAME = re.compile(rf"(?:{registry.NAME.pattern})(?:\.r[1-9][0-9]*)?")


def training_name(model: str, replica: int = 0) -> str:
    """The name of one training of `model` in a run, in its keys: the model's name for the
    first (or only) replica, `<model>.r<k>` for replica k >= 1."""
    name = model if replica == 0 else f"{model}.r{replica}"
    if replica < 0 or not TRAINING_NAME.fullmatch(name):
        raise ValueError(
            f"no training name for model {model!r}, replica {replica}: a model name is 1-32 "
            "lowercase letters, digits, '_' or '-' starting with a letter, a replica 0 or more"
        )
    return name


def run_prefix(run_id: str) -> str:
    return f"{RUNS}{run_id}/"


def run_id_of(prefix: str) -> str:
    """The run id of a `runs/<run>/` prefix."""
    return prefix.removeprefix(RUNS).rstrip("/")


def mlflow_sync_key(run_id: str) -> str:
    """What `compare-models mlflow sync` last logged of the run (the manifest is written once)."""
    return run_prefix(run_id) + "mlflow.json"


def claim_key(run_id: str) -> str:
    """Who is writing the run: claimed atomically at its start (a conditional put)."""
    return run_prefix(run_id) + "claim.json"


def manifest_key(run_id: str) -> str:
    return run_prefix(run_id) + MANIFEST


def previous_manifest_key(run_id: str, completed_at: str) -> str:
    """Where a budget-stopped manifest goes when a later run continues the run."""
    stamp = "".join(c for c in completed_at if c.isalnum())
    return run_prefix(run_id) + f"previous/manifest-{stamp}.json"


def model_key(run_id: str, model: str) -> str:
    return run_prefix(run_id) + f"models/{model}.keras"


def history_key(run_id: str, model: str) -> str:
    return run_prefix(run_id) + f"training/{model}/history.json"


def predictions_key(run_id: str, model: str) -> str:
    return run_prefix(run_id) + f"training/{model}/predictions.npz"


def checkpoint_prefix(run_id: str, model: str) -> str:
    return run_prefix(run_id) + f"checkpoints/{model}/"


def checkpoints_prefix(run_id: str) -> str:
    """Every model's checkpoints of a run (left out of the manifest's object list)."""
    return run_prefix(run_id) + "checkpoints/"


def checkpoint_state_key(run_id: str, model: str) -> str:
    return checkpoint_prefix(run_id, model) + "state.json"


def checkpoint_epochs_prefix(run_id: str, model: str) -> str:
    return checkpoint_prefix(run_id, model) + "epoch-"


def checkpoint_epoch_key(run_id: str, model: str, epoch: int) -> str:
    return checkpoint_epochs_prefix(run_id, model) + f"{epoch:04d}.keras"


def metrics_key(run_id: str, model: str) -> str:
    return run_prefix(run_id) + f"metrics/{model}.json"


def metrics_table_key(run_id: str, model: str, table: str) -> str:
    return run_prefix(run_id) + f"metrics/{model}_{table}.csv"


def comparison_key(run_id: str) -> str:
    return run_prefix(run_id) + "metrics/comparison.json"


def replay_key(run_id: str) -> str:
    return run_prefix(run_id) + "metrics/replay.json"


def report_key(run_id: str, filename: str) -> str:
    return run_prefix(run_id) + f"report/{filename}"


def rescored_key(run_id: str, champion_run_id: str, name: str) -> str:
    """The champion `name` of run `champion_run_id`, re-scored on run `run_id`'s test images."""
    return run_prefix(run_id) + f"rescored/{champion_run_id}/{name}.npz"


# ── champions ─────────────────────────────────────────────────────────────────

CHAMPIONS = "champions/"


def champion_key(track: str, model: str) -> str:
    return f"{CHAMPIONS}{track}/{model}.json"


def champions_prefix(track: str | None = None) -> str:
    return f"{CHAMPIONS}{track}/" if track else CHAMPIONS


def champion_of(key: str) -> tuple[str, str]:
    """(track, model) of a champion key."""
    track, _, name = key.removeprefix(CHAMPIONS).partition("/")
    return track, name.removesuffix(".json")


# ── serving exports ───────────────────────────────────────────────────────────

EXPORTS = "exports/"
#: The manifest of an export, written after its other files: without it a version is partial.
EXPORT_MANIFEST = "export.json"


def export_model_prefix(track: str, model: str) -> str:
    """TF Serving's `model_base_path` for one track's model (Triton's model directory)."""
    return f"{EXPORTS}{track}/{model}/"


def export_version_prefix(track: str, model: str, version: int) -> str:
    if version < 1:
        raise ValueError(f"an export version is a positive integer, not {version}")
    return f"{export_model_prefix(track, model)}{version}/"


def export_claim_key(track: str, model: str, version: int) -> str:
    return f"{export_model_prefix(track, model)}claims/{version}.json"


def export_claims_prefix(track: str, model: str) -> str:
    return f"{export_model_prefix(track, model)}claims/"


def triton_config_key(track: str, model: str) -> str:
    return f"{export_model_prefix(track, model)}config.pbtxt"


def run_export_prefix(run_id: str, model: str) -> str:
    """Where a by-hand export of a model that is not its track's champion goes: never the
    served tree (tracks start with a letter or digit, so `_runs` is no track)."""
    return f"{EXPORTS}_runs/{run_id}/{model}/"


# ── batch predictions ─────────────────────────────────────────────────────────

#: The summary of a batch prediction, written after its rows: without it the result is partial.
PREDICTIONS_SUMMARY = "summary.json"


def predictions_prefix(track: str, model: str, version: int, source_digest: str) -> str:
    if not VERSION_ID.fullmatch(source_digest):
        raise ValueError(f"a source digest is 64 hex digits, not {source_digest[:80]!r}")
    return f"predictions/{track}/{model}/{version}/{source_digest}/"


def incoming_prefix(track: str) -> str:
    """Where a track's images to score arrive, by default (the batch prediction's source)."""
    return f"incoming/{track}/"


# ── datasets ──────────────────────────────────────────────────────────────────


def dataset_prefix(name: str, digest: str) -> str:
    return f"{datasets_named(name)}{digest}/"


DATASETS = "datasets/"
SOURCES = f"{DATASETS}_sources/"


def datasets_named(name: str) -> str:
    """Every stored version (archive hash) of a dataset name."""
    return f"{DATASETS}{name}/"


def source_index_key(location: str) -> str:
    return f"{SOURCES}{hashlib.sha256(location.encode()).hexdigest()}.json"


def raw_archive_prefix(name: str, digest: str) -> str:
    return dataset_prefix(name, digest) + "raw/"


def raw_archive_key(name: str, digest: str, filename: str) -> str:
    return raw_archive_prefix(name, digest) + filename


def splits_prefix(name: str, digest: str, split_key: str) -> str:
    return dataset_prefix(name, digest) + f"splits/{split_key}/"


#: What `splits_prefix` makes: (dataset name, archive sha256, split key), to check a prefix read back from S3.
SPLITS_PREFIX = re.compile(
    r"datasets/([a-z0-9][a-z0-9._-]{0,127})/([0-9a-f]{64})/splits/([0-9a-f]{16})/"
)


VERSIONS = "datasets/_versions/"
FOLDERS = "datasets/_folders/"
PIXELS = "datasets/_pixels/"
VERSION_ID = re.compile(r"[0-9a-f]{64}")


def version_key(version_id: str) -> str:
    return f"{VERSIONS}{version_id}/version.json"


def version_summary_key(version_id: str) -> str:
    return f"{VERSIONS}{version_id}/summary.json"


def version_of(prefix: str) -> str:
    """The version id of a `datasets/_versions/<id>/` prefix."""
    return prefix.removeprefix(VERSIONS).rstrip("/")


def folder_latest_key(location: str, size: int = 32) -> str:
    """Which version of the folder source `location` at image size `size` is the newest (a
    pointer, overwritten; at 32, the pointer every version before image sizes moved)."""
    name = "latest.json" if size == 32 else f"latest-{size}.json"
    return f"{FOLDERS}{hashlib.sha256(location.encode()).hexdigest()}/{name}"


def pixels_key(digest: str, size: tuple[int, int] = (32, 32)) -> str:
    """A pack of decoded images (their files' SHA-256 and pixels), named by its own SHA-256."""
    return f"{PIXELS}{size[0]}x{size[1]}/{digest}.npz"


PIXELS_KEY = re.compile(r"datasets/_pixels/([0-9]{1,4})x([0-9]{1,4})/([0-9a-f]{64})\.npz")


def prepared_key(prefix: str) -> str:
    """`prepared.json` of a splits prefix: written last, a prefix without it is rebuilt."""
    return prefix + "prepared.json"


def split_file_key(prefix: str, split: str) -> str:
    """A split as one `.npz` (prepared before shards; still read)."""
    return prefix + f"{split}.npz"


def shards_prefix(prefix: str, split: str) -> str:
    """Where a split's shards are: ArrayRecord files and the labels, each named by its SHA-256."""
    return prefix + f"shards/{split}/"


def shard_key(prefix: str, split: str, sha256: str) -> str:
    return shards_prefix(prefix, split) + f"{sha256}.array_record"


def labels_key(prefix: str, split: str, sha256: str) -> str:
    return shards_prefix(prefix, split) + f"labels-{sha256}.npy"


def damaged_key(prefix: str) -> str:
    """Which shards of a splits prefix a reader found damaged: the next run rebuilds them."""
    return prefix + "damaged.json"


# ── weights ───────────────────────────────────────────────────────────────────


def keras_weights_key(filename: str) -> str:
    return f"weights/keras/{filename}"


def weights_file_key(digest: str, filename: str) -> str:
    return f"weights/sha256/{digest}/{filename}"


#: What `weights_file_key` makes: (sha256, file name), to check a key read back from a parameter.
WEIGHTS_FILE_KEY = re.compile(r"weights/sha256/([0-9a-f]{64})/([^/]+)")
