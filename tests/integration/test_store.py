"""The S3 store against the real local SeaweedFS: start-up checks and write-once objects."""

from __future__ import annotations

import pytest

from compare_models.config import Settings
from compare_models.storage.errors import ObjectExists, StoreError
from compare_models.storage.store import ArtifactStore

pytestmark = pytest.mark.integration


def _store(**update) -> ArtifactStore:
    from pydantic import SecretStr

    settings = Settings()
    update = {
        k: SecretStr(v) if k.startswith("aws_") and k != "aws_region" else v
        for k, v in update.items()
    }
    return ArtifactStore.from_settings(settings.model_copy(update=update))


def test_check_passes_on_the_test_bucket(stack):
    stack.check()


def test_unreachable_endpoint(stack):
    with pytest.raises(
        StoreError, match="cannot reach the S3 endpoint http://127.0.0.1:9.*compare-models up"
    ):
        _store(s3_endpoint_url="http://127.0.0.1:9").check()


def test_bad_credentials(stack):
    secret = "definitely-wrong-secret"
    with pytest.raises(StoreError, match="refused the credentials.*AWS_ACCESS_KEY_ID") as info:
        _store(aws_access_key_id="nobody", aws_secret_access_key=secret).check()
    assert secret not in str(info.value)


def test_missing_bucket(stack):
    with pytest.raises(StoreError, match="bucket 'no-such-bucket-here' does not exist"):
        _store(bucket="no-such-bucket-here").check()


def test_objects_are_write_once_unless_asked(stack):
    stack.put_json({"a": 1}, "tests/once.json")
    with pytest.raises(ObjectExists, match="write-once"):
        stack.put_json({"a": 2}, "tests/once.json")
    assert stack.get_json("tests/once.json") == {"a": 1}
    stack.put_json({"a": 3}, "tests/once.json", overwrite=True)
    assert stack.get_json("tests/once.json") == {"a": 3}


def test_presigned_links_work_and_hold_no_secret(stack):
    import httpx

    stack.put_bytes(b"hello", "tests/hello.txt", overwrite=True)
    url = stack.presign("tests/hello.txt", 60)
    assert httpx.get(url).content == b"hello"
    assert Settings().aws_secret_access_key.get_secret_value() not in url


def test_delete_prefix_keeps_what_it_is_told_and_nothing_outside(stack):
    for i in range(3):
        stack.put_bytes(b"x", f"tests/del/epoch-{i}", overwrite=True)
    stack.put_bytes(b"y", "tests/del-sibling/keep", overwrite=True)
    stack.put_bytes(b"z", "tests/del/state.json", overwrite=True)
    assert stack.delete_prefix("tests/del/epoch-", keep=["tests/del/epoch-2"]) == 2
    assert sorted(stack.list_keys("tests/del")) == [
        "tests/del-sibling/keep",
        "tests/del/epoch-2",
        "tests/del/state.json",
    ]
    assert stack.delete_prefix("tests/del/") == 2
    assert list(stack.list_keys("tests/del")) == ["tests/del-sibling/keep"]
    with pytest.raises(ValueError, match="delete_bucket"):
        stack.delete_prefix("")  # never the whole bucket by accident
    assert list(stack.list_keys("tests/del")) == ["tests/del-sibling/keep"]
