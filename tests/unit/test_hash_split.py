"""The `hash` split protocol and dataset version ids, on hand-built rows."""

from __future__ import annotations

import hashlib
from collections import Counter

import pytest

from compare_models.config import SplitFractions, SplitSpec
from compare_models.data.versions import ImageRow, compute_version_id, hash_split

HASH = SplitSpec(protocol="hash")
SHAS = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(20_000)]


def test_the_split_follows_the_fractions_and_the_content_only():
    counts = Counter(hash_split(sha, HASH, None) for sha in SHAS)
    assert counts["train"] / len(SHAS) == pytest.approx(0.7, abs=0.015)
    assert counts["val"] / len(SHAS) == pytest.approx(0.1, abs=0.01)
    assert counts["test"] / len(SHAS) == pytest.approx(0.2, abs=0.01)
    assert [hash_split(sha, HASH, None) for sha in SHAS[:50]] == [
        hash_split(sha, HASH, None) for sha in SHAS[:50]
    ]
    salted = SplitSpec(protocol="hash", seed=7)
    assert [hash_split(s, HASH, None) for s in SHAS[:200]] != [
        hash_split(s, salted, None) for s in SHAS[:200]
    ]


def test_a_fixed_test_folder_stays_test_and_training_is_hashed_into_train_and_val():
    assert {hash_split(sha, HASH, "test") for sha in SHAS[:500]} == {"test"}
    train = Counter(hash_split(sha, HASH, "train") for sha in SHAS)
    assert set(train) == {"train", "val"}
    assert train["val"] / len(SHAS) == pytest.approx(0.1 / 0.8, abs=0.01)


def test_fractions_must_add_up_to_one():
    with pytest.raises(ValueError, match="add up to 1"):
        SplitFractions(train=0.7, val=0.2, test=0.2)


def test_the_version_id_hashes_content_not_stamps():
    rows = [
        ImageRow(key=f"a/{i}.png", size=10, stamp="e1", sha256=SHAS[i], class_name="a", split="train", pixels=SHAS[0])
        for i in range(3)
    ]  # fmt: skip
    same = [r.model_copy(update={"stamp": "other-etag", "pixels": SHAS[1]}) for r in rows]
    assert compute_version_id(rows, HASH, "r") == compute_version_id(reversed(same), HASH, "r")
    moved = [rows[0].model_copy(update={"split": "test"}), *rows[1:]]
    assert compute_version_id(moved, HASH, "r") != compute_version_id(rows, HASH, "r")
    assert compute_version_id(rows, SplitSpec(protocol="hash", seed=1), "r") != compute_version_id(
        rows, HASH, "r"
    )


def test_the_archive_protocols_keep_their_split_keys():
    from compare_models.data.dataset import split_key

    spec = SplitSpec(protocol="sizes", train=20, val=10, test=10)
    assert "fractions" not in spec.identity() and "fractions" in HASH.identity()
    assert split_key(spec) != split_key(HASH)
