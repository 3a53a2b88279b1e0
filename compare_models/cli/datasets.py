"""`compare-models datasets` and `compare-models dataset VERSION`: the stored dataset versions
of folder sources, and one version's rows."""

from __future__ import annotations

import argparse
import json

from compare_models.cli.common import fail as _fail
from compare_models.cli.common import open_store
from compare_models.cli.console import print_fields, print_table
from compare_models.storage import layout


def _store():
    return open_store()[1]


def cmd_datasets(args: argparse.Namespace) -> int:
    from compare_models.data.dataset import prepared_splits
    from compare_models.data.versions import list_versions
    from compare_models.storage.errors import StoreError

    try:
        store = _store()
        versions = list_versions(store)
        if args.source:
            versions = [v for v in versions if v.source == args.source]
        prepared = {v.version_id: prepared_splits(store, v.name, v.version_id) for v in versions}
    except StoreError as exc:
        return _fail(str(exc))
    if args.json:
        print(
            json.dumps(
                [
                    {
                        **v.model_dump(mode="json"),
                        "prepared": [_prepared_json(r) for r in prepared[v.version_id]],
                    }
                    for v in versions
                ],
                indent=2,
            )
        )
        return 0
    rows = [
        {
            "version": v.version_id[:12],
            "created": v.created_at[:19],
            "source": v.source,
            "images": f"{v.images:,}",
            "size": f"{v.image_size}x{v.image_size}",
            "per class": ", ".join(f"{c} {sum(n.values())}" for c, n in v.counts.items()),
            "added": sum(ch.added for ch in v.changes.values()),
            "removed": sum(ch.removed for ch in v.changes.values()),
            "skipped": v.skipped,
            "shards": " + ".join(
                r.storage()["stored as"].split()[0] for r in prepared[v.version_id]
            )
            or "-",
            "MiB": " + ".join(r.storage()["stored MiB"] for r in prepared[v.version_id]) or "-",
        }
        for v in versions
    ]
    print_table(rows, title="Dataset versions")
    return 0


def _find(store, prefix: str) -> str:
    """The full id of the stored version whose id starts with `prefix` (at least 6 digits)."""
    from compare_models.data.errors import DataError
    from compare_models.data.versions import list_versions

    if layout.VERSION_ID.fullmatch(prefix):
        return prefix
    matches = [v.version_id for v in list_versions(store) if v.version_id.startswith(prefix)]
    if len(prefix) < 6 or len(matches) != 1:
        raise DataError(
            f"{prefix!r} names {len(matches)} stored version(s); give 6 or more leading digits of one "
            "(`compare-models datasets` lists them)"
        )
    return matches[0]


def _prepared_json(ref) -> dict:
    """A prepared split in `--json`: where, its images per split, and its storage."""
    return {
        "prefix": ref.prefix,
        "split_key": ref.split_key,
        "sizes": ref.sizes,
        "image_size": ref.image_size,
        "shards": {split: len(m.shards) for split, m in ref.shards.items()},
        "stored_bytes": ref.stored_bytes,
    }


def cmd_dataset(args: argparse.Namespace) -> int:
    from compare_models.data.dataset import prepared_splits
    from compare_models.data.errors import DataError
    from compare_models.data.versions import read_version
    from compare_models.storage.errors import StoreError

    try:
        store = _store()
        version = read_version(store, _find(store, args.version))
    except (StoreError, DataError) as exc:
        return _fail(str(exc))
    rows = version.rows if not args.skipped else version.skipped_rows()
    try:
        prepared = prepared_splits(store, version.summary.name, version.version_id)
    except StoreError as exc:
        return _fail(str(exc))
    if args.json:
        print(
            json.dumps(
                {
                    "summary": version.summary.model_dump(mode="json"),
                    "prepared": [_prepared_json(r) for r in prepared],
                    "rows": [r.model_dump(mode="json") for r in rows],
                },
                indent=2,
            )
        )
        return 0
    s = version.summary
    print_fields(
        {
            "version": s.version_id,
            "source": f"{s.source} ({s.layout})",
            "created": s.created_at[:19],
            "images": f"{s.images:,} in {len(s.class_names)} classes",
            "skipped": s.skipped,
            "duplicates": s.duplicates,
            "in training and test": s.leaked,
            "resize": s.resize,
        },
        title="Dataset version",
    )
    if prepared:
        print_table(
            [
                {
                    "split key": r.split_key or "-",
                    **{f"{k} images": f"{n:,}" for k, n in r.sizes.items()},
                    **r.storage(),
                }
                for r in prepared
            ],
            title="Prepared splits",
        )
    print_table(
        [
            {
                "key": r.key,
                "class": r.class_name or "-",
                "split": r.split or "-",
                "sha256": (r.sha256 or "-")[:12],
                "bytes": r.size,
                "note": r.skipped or (f"duplicate of {r.duplicate_of}" if r.duplicate_of else ""),
            }
            for r in rows
        ],
        title="Files",
    )
    return 0


def add_datasets(sub: argparse._SubParsersAction) -> None:
    ds = sub.add_parser(
        "datasets", help="the stored versions of folder sources (images per class, added, removed)"
    )
    ds.add_argument("--source", help="only the versions of this folder (as the run named it)")
    ds.add_argument("--json", action="store_true")
    ds.set_defaults(func=cmd_datasets)


def add_dataset(sub: argparse._SubParsersAction) -> None:
    d = sub.add_parser(
        "dataset", help="one dataset version's rows: every file, its class, split or reason"
    )
    d.add_argument("version", help="the version id, or 6 or more of its leading digits")
    d.add_argument("--skipped", action="store_true", help="only the skipped files")
    d.add_argument("--json", action="store_true")
    d.set_defaults(func=cmd_dataset)
