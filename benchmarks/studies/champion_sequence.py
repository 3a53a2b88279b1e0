"""The champion gate on real data, end to end: three CNN runs on real CIFAR-10 on a track of
their own. The first becomes the champion, an identical second run is judged "no
significant change", and a deliberately weaker third run (a tenth of the training images)
is flagged as a regression: the Prefect event is read back from the event feed and a
webhook receiver on 127.0.0.1 gets the notification through the regression automation.

    python -m benchmarks.studies.champion_sequence [--train-size 6000] [--weak-train-size 600] [--epochs 2]

Prints one JSON document: each run's decision, accuracy with its interval, McNemar's p,
whether the event and the notification arrived, and the seconds each step took.
"""

from __future__ import annotations

import argparse
import json
import secrets
import subprocess
import sys
import time

from benchmarks.common import ROOT, emit, require_archive, scratch_bucket
from tests.support.webhook_receiver import start_receiver


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--train-size", type=int, default=6000)
    ap.add_argument("--weak-train-size", type=int, default=600)
    ap.add_argument("--epochs", type=int, default=2)
    args = ap.parse_args()

    from pydantic import SecretStr

    from compare_models.config import Settings
    from compare_models.runs.record import RunSummary
    from deployments.alerts import ensure_regression_automation

    server, received = start_receiver()
    track = f"bench-{secrets.token_hex(3)}"
    name, block = f"compare-models-bench {track}", f"cm-bench-webhook-{track}"
    url = SecretStr(f"http://127.0.0.1:{server.server_port}/hook")
    ensure_regression_automation(
        Settings().model_copy(update={"alert_webhook_url": url}), name=name, block_name=block
    )
    runs = []
    try:
        with scratch_bucket():
            for label, train_size in (
                ("first", args.train_size),
                ("identical", args.train_size),
                ("weaker", args.weak_train_size),
            ):
                command = [
                    sys.executable,
                    "-m",
                    "compare_models.cli.main",
                    "run",
                    "--preset",
                    "smoke",
                    "--data",
                    str(require_archive()),
                    "--models",
                    "cnn",
                    "--split",
                    "sizes",
                    "--train-size",
                    str(train_size),
                    "--val-size",
                    "500",
                    "--test-size",
                    "1000",
                    "--epochs",
                    str(args.epochs),
                    "--track",
                    track,
                    "--json",
                ]
                started = time.perf_counter()
                out = subprocess.run(
                    command, cwd=ROOT, capture_output=True, text=True, timeout=1800
                )
                if out.returncode != 0:
                    raise SystemExit(f"{label} run failed:\n{out.stderr[-3000:]}")
                summary = RunSummary.model_validate_json(out.stdout)
                decision = summary.gate["cnn"]
                pair = decision.comparison
                comparison = summary.comparison
                interval = comparison.models["cnn"].accuracy if comparison else None
                runs.append(
                    {
                        "run": label,
                        "run_id": summary.run_id,
                        "train_images": train_size,
                        "seconds": round(time.perf_counter() - started, 1),
                        "accuracy": interval.model_dump(mode="json") if interval else None,
                        "decision": decision.decision,
                        "reason": decision.reason,
                        "mcnemar_p": pair.mcnemar.pvalue if pair else None,
                    }
                )
                print(json.dumps(runs[-1]), file=sys.stderr)
            event, waited = _regression_event(runs[-1]["run_id"], received)
    finally:
        server.shutdown()
        _remove(name, block)
    emit(
        "champion_sequence",
        {
            "settings": {
                "train_size": args.train_size,
                "weak_train_size": args.weak_train_size,
                "epochs": args.epochs,
                "test_images": 1000,
                "data": "cifar10-jpeg",
                "track": track,
            },
            "runs": runs,
            "event_in_feed": event,
            "webhook_notifications": len(received),
            "notification_subject": received[0]["subject"] if received else None,
            "waited_s": waited,
        },
    )


def _regression_event(run_id: str, received: list) -> tuple[bool, float]:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

    from compare_models.events import MODEL_REGRESSED

    started, found = time.monotonic(), False
    while time.monotonic() - started < 90 and not (found and received):
        with get_client(sync_client=True) as client:
            found = bool(
                client.read_events(
                    EventFilter(
                        event=EventNameFilter(name=[MODEL_REGRESSED.name]),
                        resource=EventResourceFilter(id=[f"compare-models.run.{run_id}.cnn"]),
                    ),
                    limit=5,
                ).events
            )
        time.sleep(1)
    return found, round(time.monotonic() - started, 1)


def _remove(name: str, block: str) -> None:
    from prefect.blocks.notifications import CustomWebhookNotificationBlock
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        for automation in client.read_automations_by_name(name):
            client.delete_automation(automation.id)
    CustomWebhookNotificationBlock.delete(block)


if __name__ == "__main__":
    main()
