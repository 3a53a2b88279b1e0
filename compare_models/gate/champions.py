"""Champions: the model in use, per model name and track, and the gate that judges each new
model (the challenger) against it with the paired test on the same test images.

The record of a champion lives at `champions/<track>/<model>.json`: the current champion
(run id, model and predictions keys, the data it was tested on, its metrics, when, why and
by whom it was promoted) and the history of earlier champions; its schema is
`compare_models.runs.champion_record.ChampionRecord`. Every change is a
conditional write (If-Match on the ETag read, If-None-Match for the first champion), so
two runs finishing at once never lose a promotion: the loser re-reads the record and is
judged again against the new champion. A retried run never promotes twice: a record whose
champion already is this run is left alone.

Comparable means tested on the same images: the same archive (SHA-256) and the same test
indices. A champion tested elsewhere is not compared with: the run says so, and promotion
is left to a person (`compare-models promote`).
"""

from __future__ import annotations

import getpass
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial

import numpy as np

from compare_models.config import CIFAR10_CLASSES, ComparisonParams, GatePolicy
from compare_models.runs.champion_record import (
    ChampionData,
    ChampionEntry,
    ChampionMetrics,
    ChampionRecord,
    promote,
    read,
)
from compare_models.runs.decision import (
    ALREADY,
    FIRST,
    NO_CHANGE,
    NOT_COMPARABLE,
    PROMOTED,
    REGRESSION,
    WITHIN_NOISE,
    GateDecision,
    NoiseBand,
    TestImages,
)
from compare_models.runs.fingerprint import data_identity
from compare_models.runs.record import RunRecord
from compare_models.statistics.paired import compare_pair
from compare_models.statistics.records import PairComparison
from compare_models.storage import layout
from compare_models.storage.errors import PreconditionFailed, StoreError
from compare_models.storage.store import ArtifactStore

#: Attempts at the conditional write before giving up (each loss re-reads and re-judges).
MAX_ATTEMPTS = 5

log = logging.getLogger(__name__)


class ChampionError(StoreError):
    """A champion operation that cannot be done (unknown run or model, a lost race)."""


class RescoreFailed(RuntimeError):
    """A champion's model could not predict this run's test images (gone, other outputs)."""


def _now() -> str:
    return datetime.now(UTC).isoformat()


def entry_for(record: RunRecord, model: str, *, reason: str, by: str) -> ChampionEntry:
    """A champion entry for one model of a run, from the run's record."""
    trained, metrics, interval = (
        record.models[model],
        record.metrics[model],
        record.accuracy_interval(model),
    )
    return ChampionEntry(
        run_id=record.run_id,
        model=model,
        model_key=trained.model_key,
        predictions_key=trained.predictions_key,
        dataset=ChampionData.model_validate(
            data_identity(record.dataset.model_dump(mode="json"), "class_names")
        ),
        metrics=ChampionMetrics(accuracy=metrics.accuracy, f1_macro=metrics.f1_macro),
        accuracy_interval=interval,
        promoted_at=_now(),
        reason=reason,
        by=by,
        input_size=record.params.train_for(model).input_size,
    )


def recipe_difference(champion: ChampionEntry, challenger: ChampionEntry) -> str:
    """What makes the challenger another recipe than the champion, in words ("" where nothing
    the gate knows of does): the side its model works at."""
    mine, theirs = challenger.working_size, champion.working_size
    if mine == theirs:
        return ""
    return (
        f"another recipe than the champion's: this model works at {mine}x{mine} pixels "
        f"(train.input_size), the champion's at {theirs}x{theirs}"
    )


SAME_IMAGES, RESCORE, INCOMPARABLE = "same-images", "rescore", "incomparable"


def class_names_of(data: ChampionData) -> list[str]:
    """The classes a champion entry was tested on: recorded since folder sources; before, only
    CIFAR-10 (or the synthetic data's ten) could be."""
    if data.class_names:
        return list(data.class_names)
    if data.name == "synthetic":
        return [f"synthetic-{c}" for c in range(len(CIFAR10_CLASSES))]
    return list(CIFAR10_CLASSES)


def comparable(champion: ChampionEntry, data: ChampionData) -> tuple[str, str]:
    """How a champion can be compared with a run tested on `data`, and if not on the same
    images, why: `SAME_IMAGES` (tested on this run's test images: pair the stored predictions),
    `RESCORE` (other images of the same classes and input size: its model must predict this
    run's test images first) or `INCOMPARABLE` (other classes, or images of another size)."""
    theirs = champion.dataset
    mine_classes, their_classes = class_names_of(data), class_names_of(theirs)
    if mine_classes != their_classes:
        return INCOMPARABLE, (
            f"the champion (run {champion.run_id}) was trained on other classes "
            f"({', '.join(their_classes[:12])}) than this run ({', '.join(mine_classes[:12])})"
        )
    mine_size, their_size = data.side, theirs.side
    if mine_size != their_size:
        return INCOMPARABLE, (
            f"the champion (run {champion.run_id}) was trained and tested on images of "
            f"{their_size}x{their_size} pixels, this run on {mine_size}x{mine_size}: its model "
            "takes no images of this run's size, and the two test sets are not the same images"
        )
    same_data = theirs.archive_sha256 == data.archive_sha256 and theirs.name == data.name
    if same_data and data.test_images == theirs.test_images:
        return SAME_IMAGES, ""
    where = (
        f"version {theirs.version_id[:12]}"
        if theirs.version_id
        else f"{theirs.name}, archive {str(theirs.archive_sha256)[:12]}"
    )
    return RESCORE, f"the champion (run {champion.run_id}) was tested on other images ({where})"


def decide(
    pair: PairComparison, policy: GatePolicy, band: NoiseBand | None = None
) -> tuple[str, str]:
    """(decision, reason) from the paired comparison champion (a) vs challenger (b).

    A significant difference counts only beyond the noise `band` (None: no band, every
    significant difference counts): worse beyond it is a regression, worse within it is
    within-noise, better beyond it (and by `min_improvement`) promotes. Each class is judged
    against its own band. The reason gives the numbers: difference, interval, p-value, band."""
    diff, p = pair.difference.accuracy, pair.mcnemar.pvalue
    level = f"{100 * pair.settings.confidence:g}%"
    points = (
        f"{100 * diff.estimate:+.2f} points ({level} CI {100 * diff.ci_low:+.2f} to "
        f"{100 * diff.ci_high:+.2f})"
    )
    width = band.points if band else 0.0
    noise = f"; noise band ±{100 * width:.2f} points ({band.source}: {band.detail})" if band else ""
    worse = pair.worse_classes
    beyond = [
        c.class_name
        for c in pair.per_class
        if c.class_name in worse
        and -c.difference > (band.class_points.get(c.class_name, 0.0) if band else 0.0)
    ]
    significant = p < policy.alpha
    if significant and diff.estimate < -width:
        return (
            REGRESSION,
            f"significantly worse than the champion: accuracy {points}, McNemar p = {p:.3g}{noise}",
        )
    below = below_curve(pair, band)
    if below:
        return REGRESSION, f"{below}; against the champion: accuracy {points}, McNemar p = {p:.3g}"
    if policy.class_regressions and beyond:
        return REGRESSION, (
            f"significantly worse than the champion in {len(beyond)} class(es) after Holm's correction"
            f"{', beyond their noise bands' if band else ''} ({', '.join(beyond)}); overall {points}, "
            f"p = {p:.3g}{noise}"
        )
    worse_overall = significant and diff.estimate < 0
    within = (
        f"; worse in {len(worse)} class(es) after Holm's correction ({', '.join(worse)}), "
        "within their noise bands"
        if policy.class_regressions and worse
        else ""
    )
    if worse_overall:
        return WITHIN_NOISE, (
            f"significantly worse than the champion, but within the noise band: accuracy {points}, "
            f"McNemar p = {p:.3g}{within}{noise}"
        )
    # a gain beyond the band counts even where a class moved within its own band
    if significant and diff.estimate > width and diff.estimate >= policy.min_improvement:
        return PROMOTED, (
            f"significantly better than the champion: accuracy {points}, McNemar p = {p:.3g}"
            f"{within}{noise}"
        )
    if significant and diff.estimate > width:
        return NO_CHANGE, (
            f"better, but by less than the policy's minimum of {100 * policy.min_improvement:.2f} points: "
            f"{points}, p = {p:.3g}{within}{noise}"
        )
    if within:
        return WITHIN_NOISE, (
            f"not significantly worse than the champion, but within the noise band: accuracy "
            f"{points}, McNemar p = {p:.3g}{within}{noise}"
        )
    if significant and diff.estimate > 0:
        return (
            NO_CHANGE,
            f"better, but within the noise band: accuracy {points}, McNemar p = {p:.3g}{noise}",
        )
    return NO_CHANGE, f"no significant change: accuracy {points}, McNemar p = {p:.3g}{noise}"


def below_curve(pair: PairComparison, band: NoiseBand | None) -> str:
    """Why the challenger is a regression against the learning curve of its recipe: its
    accuracy below the curve's prediction at tonight's training images by more than the
    interval for tonight's residual ("" when it is not, or there is no curve)."""
    curve = band.curve if band else None
    observed = pair.accuracy.get(pair.b)
    if curve is None or observed is None:
        return ""
    residual = observed.estimate - curve.predicted
    if residual >= -curve.residual_points:
        return ""
    return (
        f"below the learning curve: accuracy {100 * observed.estimate:.2f}% at "
        f"{curve.train_images:,} training images where the curve predicts "
        f"{100 * curve.predicted:.2f}% ± {100 * curve.residual_points:.2f} points "
        f"({100 * curve.fit.coverage:g}% interval for tonight's residual; residual "
        f"{100 * residual:+.2f} points), {curve.fit.describe()}"
    )


@dataclass(frozen=True)
class Challenger:
    """A new model to judge: the entry it would become as champion, and its test predictions.
    `hold`, when given, is why it must not be promoted whatever it scores (e.g. "stopped by
    budget after 1 of 3 epochs": its model will still change); it is judged all the same, and
    a regression is still one. `band` is the noise band its differences must leave to count
    (`compare_models.gate.noise_band`; None: every significant difference counts)."""

    run_id: str
    model: str
    entry: ChampionEntry
    probs: np.ndarray
    hold: str | None = None
    band: NoiseBand | None = None


@dataclass(frozen=True)
class Judge:
    """How challengers are judged: on these test labels, with this policy and these statistics;
    `predictions(key)` loads a champion's stored predictions."""

    y_true: np.ndarray
    class_names: list[str]
    policy: GatePolicy
    comparison: ComparisonParams
    predictions: Callable[[str], np.ndarray]
    #: predicts this run's test images with a champion entry's stored model and returns the
    #: predictions' key (raises `RescoreFailed` when it cannot); None: never re-score
    rescore: Callable[[ChampionEntry], str] | None = None
    test_images: TestImages | None = None

    def against(self, current: ChampionEntry | None, challenger: Challenger) -> GateDecision:
        """The decision on `challenger` against the champion entry `current` (None: no
        champion yet), without writing anything."""
        track, model, run_id = self.policy.track, challenger.model, challenger.run_id
        decided = partial(
            GateDecision, model=model, track=track, champion_run_id=current and current.run_id
        )
        if current and current.run_id == run_id:
            return decided(
                decision=ALREADY,
                reason="this run already is the champion (an earlier attempt of it promoted it)",
            )
        if current is None:
            return decided(
                decision=FIRST,
                reason=f"the first completed run of {model} on track {track!r} becomes its champion",
            )
        how, why = comparable(current, challenger.entry.dataset)
        predictions_key, rescored = current.predictions_key, False
        if how == RESCORE and self.rescore is not None:
            try:
                predictions_key, rescored = self.rescore(current), True
            except RescoreFailed as exc:
                how, why = (
                    INCOMPARABLE,
                    f"{why}, and it could not be re-scored on this run's: {exc}",
                )
        elif how == RESCORE:
            how = INCOMPARABLE
        if how == INCOMPARABLE:
            return decided(
                decision=NOT_COMPARABLE,
                reason=f"{why}: nothing was compared and the champion stays. Promote by hand with "
                f"`compare-models promote {run_id} --model {model} --track {track} --reason ...` "
                "if this run should replace it.",
                test_images=self.test_images,
            )
        pair = compare_pair(
            self.y_true,
            self.predictions(predictions_key),
            challenger.probs,
            name_a="champion",
            name_b="challenger",
            class_names=self.class_names,
            n_resamples=self.comparison.resamples,
            seed=self.comparison.seed,
            confidence=self.comparison.confidence,
            alpha=self.policy.alpha,
        )
        decision, reason = decide(pair, self.policy, challenger.band)
        other_recipe = recipe_difference(current, challenger.entry)
        if other_recipe:
            reason = f"{reason}; {other_recipe}"
        if rescored:
            count = self.test_images.count if self.test_images else len(self.y_true)
            reason = (
                f"{reason}; {why}, so its model was re-scored on this run's {count:,} test images"
            )
        return decided(
            decision=decision,
            reason=reason,
            comparison=pair,
            band=challenger.band,
            test_images=self.test_images,
            rescored=rescored,
            rescored_predictions_key=predictions_key if rescored else None,
        )


def promote_if_unchanged(
    store: ArtifactStore,
    track: str,
    record: ChampionRecord | None,
    etag: str | None,
    entry: ChampionEntry,
) -> bool:
    """Makes `entry` the champion if the record is still the one read (its ETag; None: still
    no record). False when another run changed it meanwhile."""
    try:
        store.put_json_if(
            promote(record, entry).model_dump(mode="json"),
            layout.champion_key(track, entry.model),
            etag=etag,
        )
    except PreconditionFailed:
        return False
    return True


def gate(
    store: ArtifactStore,
    challenger: Challenger,
    judge: Judge,
    *,
    before_write: Callable[[], None] | None = None,
) -> GateDecision:
    """Judges one challenger against its champion and promotes it if the policy says so:
    read the record → decide → promote only if the record is unchanged. A run that loses the
    race is judged again against the champion that won (`lost_race_to` names the winners).
    `before_write` runs right before each conditional write (a hook for race tests)."""
    track, model, lost = judge.policy.track, challenger.model, []
    for attempt in range(1, MAX_ATTEMPTS + 1):
        record, etag = read(store, track, model)
        decision = judge.against(record.current if record else None, challenger)
        decision = decision.model_copy(update={"attempts": attempt, "lost_race_to": list(lost)})
        if decision.decision not in (FIRST, PROMOTED):
            return decision
        if challenger.hold:
            reason = f"{decision.reason}; not promoted: {challenger.hold}"
            return decision.model_copy(update={"decision": NO_CHANGE, "reason": reason})
        if before_write is not None:
            before_write()
        if promote_if_unchanged(
            store,
            track,
            record,
            etag,
            challenger.entry.model_copy(update={"reason": decision.reason}),
        ):
            return decision
        winner, _ = read(store, track, model)
        lost.append(winner.current.run_id if winner and winner.current else "unknown")
    raise ChampionError(
        f"{model}: the champion record changed {MAX_ATTEMPTS} times while run {challenger.run_id} "
        f"was being judged (promoted meanwhile: {', '.join(lost)}); its decision could not be recorded"
    )


def promote_by_hand(
    store: ArtifactStore,
    *,
    track: str,
    record: RunRecord,
    model: str,
    reason: str,
    by: str | None = None,
) -> ChampionRecord:
    """A person's override: makes `model` of the completed run `record` the champion, with the
    reason and who did it recorded in the history."""
    if not reason.strip():
        raise ChampionError(
            "a manual promotion needs a reason (--reason TEXT): it is kept in the champion's history"
        )
    if model not in record.models:
        raise ChampionError(
            f"run {record.run_id} has no model {model!r}; it has {sorted(record.models)}"
        )
    entry = entry_for(record, model, reason=f"manual: {reason.strip()}", by=by or getpass.getuser())
    for _ in range(MAX_ATTEMPTS):
        current, etag = read(store, track, model)
        if current and current.current and current.current.run_id == record.run_id:
            raise ChampionError(
                f"run {record.run_id} already is the {model} champion of track {track!r}"
            )
        if promote_if_unchanged(store, track, current, etag, entry):
            return promote(current, entry)
    raise ChampionError(f"the {model} champion record of track {track!r} kept changing; try again")


def rollback(
    store: ArtifactStore, *, track: str, model: str, reason: str, by: str | None = None
) -> ChampionRecord:
    """Makes the previous champion of `track`'s `model` (the newest of its history) the champion
    again, with the reason recorded; the one it replaces goes to the history."""
    for _ in range(MAX_ATTEMPTS):
        current, etag = read(store, track, model)
        if current is None or current.current is None or not current.history:
            raise ChampionError(
                f"the {model} champion of track {track!r} has no earlier champion to roll back to"
            )
        earlier = current.history[0]
        entry = ChampionEntry.model_validate(
            {
                **earlier.model_dump(exclude={"replaced_at", "replaced_by"}),
                "promoted_at": _now(),
                "reason": f"rollback: {reason.strip() or 'by hand'}",
                "by": by or getpass.getuser(),
            }
        )
        if promote_if_unchanged(store, track, current, etag, entry):
            return promote(current, entry)
    raise ChampionError(f"the {model} champion record of track {track!r} kept changing; try again")


def update_current(
    store: ArtifactStore,
    track: str,
    model: str,
    run_id: str,
    change: Callable[[ChampionEntry], ChampionEntry | None],
) -> ChampionRecord | None:
    """Writes `change(current)` as the champion of `track`'s `model` while its run is still
    `run_id` (a conditional write: a champion changed meanwhile is never overwritten). None when
    it no longer is, or the record kept changing; the record unchanged when `change` returns None."""
    key = layout.champion_key(track, model)
    for _ in range(MAX_ATTEMPTS):
        record, etag = read(store, track, model)
        if record is None or record.current is None or record.current.run_id != run_id:
            return None
        changed = change(record.current)
        if changed is None:
            return record
        updated = record.model_copy(update={"current": changed})
        try:
            store.put_json_if(updated.model_dump(mode="json"), key, etag=etag)
        except PreconditionFailed:
            continue
        return updated
    log.warning("the champion record %s kept changing: not updated", key)
    return None


def champions(store: ArtifactStore, track: str | None = None) -> list[tuple[str, ChampionRecord]]:
    """Every champion record (of one track, or all) with its track, by track and model."""
    found = []
    for key in store.list_keys(layout.champions_prefix(track)):
        track_of, model = layout.champion_of(key)
        record = ChampionRecord.model_validate(store.get_json(key))
        found.append((track_of, record.model_copy(update={"model": model})))
    return sorted(found, key=lambda r: (r[0], r[1].model))


def markdown(decisions: Mapping[str, GateDecision], *, track: str) -> str:
    """The gate's decisions as a markdown table (Prefect artifact)."""
    lines = [
        f"# Against the champions of track `{track}`",
        "",
        "| model | decision | champion run | reason |",
        "|---|---|---|---|",
    ]
    for model, d in decisions.items():
        reason = d.reason.replace("|", "\\|")
        lines.append(f"| {model} | **{d.decision}** | {d.champion_run_id or '-'} | {reason} |")
    return "\n".join(lines) + "\n"
