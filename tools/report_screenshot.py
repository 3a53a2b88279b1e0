"""A screenshot of a run's HTML report, taken by headless Chromium: `make screenshot`.

    python tools/report_screenshot.py --run-id RUN_ID            # a run in the configured bucket
    python tools/report_screenshot.py --report path/to/index.html
    python tools/report_screenshot.py                             # the bucket's latest run

It writes docs/images/report.png (the README's and the docs' picture of the report): the top of
the page at a desktop window size, i.e. the banners and the summary. Chromium is Debian's
(`apt-get install chromium`, /usr/bin/chromium) or any other on PATH as `chromium` /
`chromium-browser` / `google-chrome`, or CHROMIUM=path; none is a Python dependency, so the
script says what is missing instead of failing half-way.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "docs" / "images" / "report.png"
BROWSERS = ("chromium", "chromium-browser", "google-chrome")

# Chromium's own background traffic (updates, sync, field trials) has nowhere to go on a
# machine without internet; these keep it quiet and the run repeatable.
QUIET = (
    "--headless",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def browser() -> str:
    found = os.environ.get("CHROMIUM") or next(filter(None, map(shutil.which, BROWSERS)), None)
    if not found:
        raise SystemExit(
            "no Chromium found (looked for CHROMIUM, " + ", ".join(BROWSERS) + "): install "
            "Debian's with `apt-get install chromium`, or set CHROMIUM to a Chrome/Chromium binary"
        )
    return found


def stored_report(run_id: str | None, folder: Path) -> Path:
    """The report of `run_id` (default: the latest completed run) from the configured bucket."""
    from compare_models.config import Settings
    from compare_models.runs.stored import latest_run_id, read_record
    from compare_models.storage.store import ArtifactStore

    store = ArtifactStore.from_settings(Settings())
    store.check()
    run_id = run_id or latest_run_id(store)
    if not run_id:
        raise SystemExit("no completed run in the bucket: pass --report or run one first")
    record = read_record(store, run_id)
    return store.download(record.report.files["index.html"], folder / "index.html")


def screenshot(page: Path, out: Path, *, width: int, height: int) -> Path:
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        command = [
            browser(),
            *QUIET,
            f"--user-data-dir={profile}",
            f"--window-size={width},{height}",
            f"--screenshot={out}",
            page.resolve().as_uri(),
        ]
        if os.geteuid() == 0:  # Chromium refuses to run as root with its sandbox
            command.insert(1, "--no-sandbox")
        subprocess.run(command, check=True, capture_output=True, timeout=120)
    if not out.is_file() or out.stat().st_size == 0:
        raise SystemExit(f"Chromium wrote no screenshot to {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--report", type=Path, help="an index.html on this machine")
    source.add_argument("--run-id", help="a completed run in the bucket (default: the latest)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, default=1000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="report-") as tmp:
        page = args.report or stored_report(args.run_id, Path(tmp))
        out = screenshot(page, args.out, width=args.width, height=args.height)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
