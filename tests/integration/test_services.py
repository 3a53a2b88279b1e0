"""`compare-models up / down / status` on the real local services."""

from __future__ import annotations

import functools

import pytest

from compare_models.local.ports import local_prefect_api, local_s3_url
from tests.support import stack as test_stack
from tests.support.runs import cli as run_cli

# serial: restarts the S3 service, which tests running beside it would see fail
pytestmark = [pytest.mark.integration, pytest.mark.serial]
cli = functools.partial(run_cli, timeout=300)


def test_up_is_idempotent_and_status_reports_health(stack):
    out = cli("up")
    assert out.returncode == 0, out.stderr
    assert (
        "seaweedfs-s3: already running" in out.stdout
        and "prefect-server: already running" in out.stdout
    )
    status = cli("status")
    assert status.returncode == 0
    assert local_s3_url() in status.stdout and local_prefect_api() in status.stdout


def test_stored_objects_survive_an_s3_restart(stack):
    from compare_models.config import Settings
    from compare_models.local.processes import running_pid
    from compare_models.local.services import SERVICES, down

    seaweed = SERVICES[0]
    if running_pid(Settings(), seaweed) is None:
        pytest.skip(
            "SeaweedFS was not started by `compare-models up` here; not restarting someone else's server"
        )
    stack.put_bytes(b"still here", "tests/survives-restart.txt", overwrite=True)
    assert down(only=(seaweed,)) == {"seaweedfs-s3": "stopped"}
    assert not seaweed.healthy(Settings())
    assert test_stack.up()["seaweedfs-s3"] == "started"  # not a child of this process
    # SeaweedFS answers before its volume server is back (InternalError for a moment, seen on a
    # loaded machine): the store waits that out as it waits out any outage of a run
    assert stack.waiting_out(2).get_bytes("tests/survives-restart.txt") == b"still here"


def test_credentials_never_appear_in_service_output(stack):
    from compare_models.config import Settings

    secret = Settings().aws_secret_access_key.get_secret_value()
    for args in (("up",), ("status", "--json")):
        out = cli(*args)
        assert secret not in out.stdout + out.stderr
