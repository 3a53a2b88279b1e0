"""The compose file, parsed once per module, for every infra test."""

from __future__ import annotations

import pytest
import yaml

from tests.support.runs import ROOT

COMPOSE_FILE = ROOT / "infra" / "compose" / "docker-compose.yml"


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def services(compose: dict) -> dict:
    return compose["services"]
