"""`batch-predict`: a track's champion scores a folder of images (a local directory or an
s3:// prefix; by default the bucket's `incoming/<track>/`), with its served ONNX export, in
batches (`compare_models.serving.predict`). The rows go to S3 as Parquet and CSV; the flow run
gets a table of the counts per predicted class. prefect.yaml has a trigger, off by default,
that runs it whenever a track's champion changes (`compare-models.champion.promoted`)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from compare_models.config import PredictParams
from tasks.serving import predict_images


@flow(name="batch-predict", log_prints=False)
def batch_predict(params: PredictParams = PredictParams()) -> dict[str, Any]:
    return predict_images(params).model_dump(mode="json")
