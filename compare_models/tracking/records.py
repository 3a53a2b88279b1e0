"""`Tracked`: what MLflow holds of a run, and what it does not (and why).

The run record keeps the one the run itself logged (`RunRecord.mlflow`, written once with the
manifest); `compare-models mlflow sync` writes a later one to the run's `mlflow.json`
(`layout.mlflow_sync_key`), which `show` reads first."""

from __future__ import annotations

from datetime import UTC, datetime

from pydantic import BaseModel, ConfigDict, Field


class Tracked(BaseModel):
    model_config = ConfigDict(extra="ignore")

    uri: str = Field(description="the tracking server (without credentials)")
    experiment_id: str | None = None
    run_id: str | None = Field(default=None, description="the run's own (parent) MLflow run")
    trainings: dict[str, str] = Field(
        default_factory=dict, description="per training (cnn, cnn.r1, ...), its nested MLflow run"
    )
    registered: dict[str, int] = Field(
        default_factory=dict,
        description="per model this run made a champion, its version in the MLflow registry",
    )
    not_logged: list[str] = Field(
        default_factory=list, description="what is not in MLflow, and why; empty: all of it is"
    )
    at: str = Field(default_factory=lambda: datetime.now(UTC).isoformat(timespec="seconds"))
    by: str = Field(default="run", description="`run` (the run itself) or `sync`")

    @property
    def complete(self) -> bool:
        return not self.not_logged

    def describe(self) -> str:
        """One line for `show` and the report."""
        where = f"MLflow {self.uri}"
        if self.run_id:
            where += f", experiment {self.experiment_id}, run {self.run_id}"
        if self.registered:
            where += ", registered " + ", ".join(f"{m} v{v}" for m, v in self.registered.items())
        if self.complete:
            return f"logged to {where} ({self.by}, {self.at})"
        return (
            f"not all logged to {where} ({self.by}, {self.at}): "
            + "; ".join(self.not_logged[:5])
            + (f" (and {len(self.not_logged) - 5} more)" if len(self.not_logged) > 5 else "")
            + " — `compare-models mlflow sync` logs the rest once MLflow answers"
        )
