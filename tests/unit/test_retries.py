"""The typed retry and outage settings: Prefect's exponential backoff with jitter for
trainings, the Prefect client's retries for an API outage, all in the run's parameters."""

from __future__ import annotations

from compare_models.config import ExecutionParams, RunParams


def test_training_retries_back_off_exponentially_with_jitter():
    from tasks.training import TRAINERS, retry_options

    execution = ExecutionParams(retries=3, retry_delay_seconds=10, retry_jitter_factor=0.5)
    trainer = TRAINERS["local"].with_options(**retry_options(execution))
    assert trainer.retries == 3
    assert trainer.retry_delay_seconds == [10, 20, 40]  # prefect.tasks.exponential_backoff
    assert trainer.retry_jitter_factor == 0.5


def test_the_schedule_and_the_outage_windows_are_in_the_ui_form():
    execution = RunParams.model_json_schema()["$defs"]["ExecutionParams"]["properties"]
    for field in ("retries", "retry_delay_seconds", "retry_jitter_factor"):
        assert execution[field].get("description") or field == "retries"
    assert execution["store_outage_minutes"]["default"] == 15
    assert execution["api_outage_minutes"]["default"] == 5


def test_prefect_client_retries_span_the_api_outage_window():
    for minutes in (1, 5, 10):
        retries = ExecutionParams(api_outage_minutes=minutes).prefect_client_retries()
        assert 2 ** (retries + 1) - 2 >= 60 * minutes  # 2 + 4 + ... + 2**retries seconds
    assert ExecutionParams(api_outage_minutes=0.1).prefect_client_retries() == 5  # Prefect's own
