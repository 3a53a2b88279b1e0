"""The compose file, parsed once per module, for every infra test."""

from __future__ import annotations

import pytest
import yaml

from tests.infra.test_infra import COMPOSE_FILE


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]
