"""Every corpus item is refused with its error, within 5 s and 200 MiB (each run in a forked child)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.hostile.corpus import CASES, Case
from tests.support.bounded import run_bounded

MAX_SECONDS = 5.0
MAX_EXTRA_MIB = 200.0
MAX_INPUT_BYTES = 64 << 10
README = Path(__file__).with_name("README.md")


@pytest.fixture(scope="module", autouse=True)
def _preload():
    """Import lazily loaded modules in the parent so the children's memory reflects the call alone."""
    from PIL import Image

    Image.init()
    import pickletools  # noqa: F401

    import compare_models.storage.store  # noqa: F401


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_hostile_input_is_refused_within_bounds(case: Case, tmp_path: Path):
    folder = tmp_path / "scratch"
    folder.mkdir()
    arg = case.build(folder)
    for path in folder.rglob("*"):
        if path.is_file():
            assert path.stat().st_size <= MAX_INPUT_BYTES, f"{path.name} is not a tiny input"
    outcome = run_bounded(case.act, arg, tweak=case.tweak)
    assert outcome.error_type == case.error, str(outcome)
    assert re.search(case.match, outcome.message), str(outcome)
    for text in case.forbid:
        assert text not in outcome.message, f"{text!r} leaked into: {outcome.message}"
    assert outcome.seconds < MAX_SECONDS, str(outcome)
    assert outcome.extra_mib < MAX_EXTRA_MIB, str(outcome)
    if case.after:
        case.after(folder)


def test_readme_lists_the_corpus():
    text = README.read_text()
    missing = [c.id for c in CASES if f"`{c.id}`" not in text]
    assert not missing, f"add to tests/hostile/README.md: {missing}"
    assert f"{len(CASES)} cases" in text
    assert len({c.id for c in CASES}) == len(CASES)
