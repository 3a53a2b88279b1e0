"""One real-data smoke run: the CNN and a second (tiny plugin) model through the whole flow
on a few thousand real CIFAR-10 images (../shared/data/cifar10-jpeg.tar.gz), two epochs:
the CNN clearly above chance, and the run's paired statistics equal to an independent
computation from the stored predictions."""

from __future__ import annotations

import io
import json
import os

import numpy as np
import pytest

from compare_models.data.dataset import DatasetRef, load_split
from tests.support.runs import REAL_ARCHIVE, cli, smoke_run_args

pytestmark = [pytest.mark.integration, pytest.mark.realdata]


@pytest.fixture(scope="module")
def real_run(stack, plugin_models):
    if not REAL_ARCHIVE.exists():
        message = f"real CIFAR-10 archive not found at {REAL_ARCHIVE}"
        if os.environ.get("CI"):
            pytest.fail(message + " (required in CI)")
        pytest.skip(message)
    out = cli(
        *smoke_run_args(str(REAL_ARCHIVE), f"cnn,{plugin_models}", (6000, 500, 1000), 2),
        timeout=900,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout)


def test_cnn_on_real_cifar10_is_clearly_above_chance(real_run):
    assert real_run["synthetic_data"] is False and real_run["data"]["name"] == "cifar10-jpeg"
    accuracy = real_run["metrics"]["cnn"]["accuracy"]
    print(
        f"real-data smoke: CNN test accuracy {accuracy:.4f} on 1,000 test images after 2 epochs on 6,000"
    )
    assert accuracy > 0.2, accuracy  # 0.278 seen here


def test_mcnemar_and_table_equal_an_independent_computation(real_run, stack, tmp_path):
    """From the stored predictions.npz of both models and the stored test labels, scipy's
    binomial test gives the same p-value (to 1e-9) and the same 2x2 table as the run."""
    from scipy.stats import binomtest

    manifest = stack.get_json(real_run["manifest"].removeprefix(f"s3://{stack.bucket}/"))
    _, y = load_split(DatasetRef.model_validate(manifest["dataset"]), "test", stack, tmp_path)
    right = {}
    for model in ("cnn", "tiny"):
        with np.load(
            io.BytesIO(stack.get_bytes(manifest["models"][model]["predictions_key"])),
            allow_pickle=False,
        ) as npz:
            right[model] = npz["y_prob"].argmax(1) == y
    table = {
        "both_right": int((right["cnn"] & right["tiny"]).sum()),
        "only_a_right": int((right["cnn"] & ~right["tiny"]).sum()),
        "only_b_right": int((~right["cnn"] & right["tiny"]).sum()),
        "both_wrong": int((~right["cnn"] & ~right["tiny"]).sum()),
    }
    [pair] = real_run["comparison"]["pairs"]
    assert pair["table"] == table
    b, c = table["only_a_right"], table["only_b_right"]
    assert abs(pair["mcnemar"]["pvalue"] - binomtest(min(b, c), b + c, 0.5).pvalue) < 1e-9
    print(f"real-data smoke: {pair['verdict']}")
