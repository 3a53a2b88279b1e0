"""Unit tests for compare_models.report.render: files, self-contained HTML, escaping, summaries."""

from __future__ import annotations

import html
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # before pyplot: tests must never need a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from compare_models.evaluation.metrics import evaluate_predictions  # noqa: E402
from compare_models.report.class_balance import plot_class_balance  # noqa: E402
from compare_models.report.data import ReplicaRow  # noqa: E402
from compare_models.report.render import (  # noqa: E402
    SYNTHETIC_BANNER,
    ModelResult,
    Sections,
    markdown_summary,
    per_class_table_rows,
    render_report,
)
from compare_models.runs.decision import GateDecision, NoiseBand  # noqa: E402
from compare_models.runs.record import (  # noqa: E402
    ClassDelta,
    DataChanges,
    FingerprintChange,
    Replay,
    ReplayOfModel,
    SkippedFile,
)
from compare_models.statistics.paired import compare_all, compare_pair  # noqa: E402
from compare_models.statistics.records import (  # noqa: E402
    RecipeComparison,
    RecipePair,
    RecipeSummary,
)
from tests.support.html_validation import html_problems  # noqa: E402

CLASSES = ["airplane", "automobile", "bird", "cat"]
FIGURES = ["learning_curves.png", "confusion_matrices.png", "roc_curves.png", "comparison.png"]


def _model(name: str, *, seed: int, epochs: int, skill: float) -> ModelResult:
    """A model whose probabilities lean towards the true class by `skill`."""
    rng = np.random.default_rng(seed)
    y_true = rng.integers(0, len(CLASSES), 120)
    logits = rng.normal(size=(120, len(CLASSES))) + skill * np.eye(len(CLASSES))[y_true]
    y_prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    history = {
        "loss": list(np.linspace(1.5, 0.8, epochs)),
        "accuracy": list(np.linspace(0.4, 0.7, epochs)),
        "val_loss": list(np.linspace(1.6, 1.0, epochs)),
        "val_accuracy": list(np.linspace(0.35, 0.6, epochs)),
    }
    return ModelResult(
        name=name,
        history=history,
        metrics=evaluate_predictions(y_true, y_prob, CLASSES),
        train_seconds=12.34 * (seed + 1),
        parameters=1_234_567 * (seed + 1),
    )


@pytest.fixture(scope="module")
def two_models() -> list[ModelResult]:
    return [
        _model("cnn", seed=0, epochs=3, skill=1.5),
        _model("resnet50", seed=1, epochs=3, skill=2.5),
    ]


@pytest.fixture(scope="module")
def two_model_report(tmp_path_factory, two_models) -> tuple[Path, list[Path], str]:
    out_dir = tmp_path_factory.mktemp("report") / "nested" / "out"
    run_info = {"data_source_kind": "cifar10", "epochs": 3, "note": "<script>alert(1)</script>"}
    paths = render_report(two_models, out_dir, title="CNN vs ResNet50", run_info=run_info)
    return out_dir, paths, (out_dir / "index.html").read_text(encoding="utf-8")


def test_all_files_written(two_model_report) -> None:
    out_dir, paths, _ = two_model_report
    expected = {
        *FIGURES,
        "comparison.csv",
        "per_class_cnn.csv",
        "per_class_resnet50.csv",
        "index.html",
    }
    assert {path.name for path in paths} == expected
    assert all(path.parent == out_dir and path.is_file() for path in paths)
    assert paths[-1].name == "index.html"


def test_pngs_are_valid(two_model_report) -> None:
    out_dir, _, _ = two_model_report
    for name in FIGURES:
        data = (out_dir / name).read_bytes()
        assert data.startswith(b"\x89PNG"), name


def test_figures_are_closed(two_model_report) -> None:
    assert plt.get_fignums() == []


def test_csv_tables(two_model_report, two_models) -> None:
    out_dir, _, _ = two_model_report
    comparison = pd.read_csv(out_dir / "comparison.csv", index_col="model")
    assert list(comparison.index) == ["cnn", "resnet50"]
    assert comparison.loc["cnn", "accuracy"] == pytest.approx(two_models[0].metrics.accuracy)
    assert {"roc_auc_macro", "parameters", "train_seconds"} <= set(comparison.columns)
    per_class = pd.read_csv(out_dir / "per_class_resnet50.csv")
    assert list(per_class.columns) == [
        "model",
        "class",
        "precision",
        "recall",
        "f1",
        "support",
        "auc",
    ]
    assert list(per_class["class"]) == CLASSES
    assert set(per_class["model"]) == {"resnet50"}


def test_html_contains_values_and_is_self_contained(two_model_report, two_models) -> None:
    _, _, page = two_model_report
    assert "<title>CNN vs ResNet50</title>" in page
    for result in two_models:
        assert result.name in page
        assert f"{result.metrics.accuracy:.4f}" in page
        assert f"{result.metrics.f1_macro:.4f}" in page
        assert f"{result.metrics.per_class[0].recall:.4f}" in page
        assert f"{result.parameters:,}" in page
    assert page.count('src="data:image/png;base64,') == len(FIGURES)
    assert "<pre>" in page and "macro avg" in page
    assert "http://" not in page and "https://" not in page
    # nothing outside the page: images are data: URIs, links only go to the page's own sections
    assert not re.search(r'(src|href)="(?!data:|#)', page)


def test_html_escapes_run_info(two_model_report) -> None:
    _, _, page = two_model_report
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_no_synthetic_banner_for_real_data(two_model_report) -> None:
    _, _, page = two_model_report
    assert SYNTHETIC_BANNER not in page


def test_single_model_single_epoch_synthetic(tmp_path: Path) -> None:
    result = _model("cnn", seed=3, epochs=1, skill=1.0)
    paths = render_report(
        [result], tmp_path, title="Smoke run", run_info={"data_source_kind": "synthetic"}
    )
    assert {path.name for path in paths} == {
        *FIGURES,
        "comparison.csv",
        "per_class_cnn.csv",
        "index.html",
    }
    for name in FIGURES:
        assert (tmp_path / name).read_bytes().startswith(b"\x89PNG")
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert SYNTHETIC_BANNER in page
    assert f"{result.metrics.accuracy:.4f}" in page
    assert plt.get_fignums() == []


def test_rejects_empty_and_duplicate_models(tmp_path: Path, two_models) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        render_report([], tmp_path, title="x", run_info={})
    with pytest.raises(ValueError, match="unique.*'cnn'"):
        render_report([two_models[0], two_models[0]], tmp_path, title="x", run_info={})


def test_markdown_summary(two_models) -> None:
    text = markdown_summary(
        two_models, title="CNN vs ResNet50", run_info={"data_source_kind": "cifar10", "epochs": 3}
    )
    assert text.startswith("# CNN vs ResNet50")
    assert (
        "| model | accuracy | precision (macro) | recall (macro) | F1 (macro) | "
        "ROC AUC (macro) | parameters | training s |" in text
    )
    for result in two_models:
        row = next(line for line in text.splitlines() if line.startswith(f"| {result.name} |"))
        assert f"{result.metrics.accuracy:.4f}" in row
        assert f"{result.metrics.roc_auc_macro:.4f}" in row
        assert f"{result.parameters:,}" in row
    assert "**epochs**: 3" in text
    assert SYNTHETIC_BANNER not in text
    synthetic = markdown_summary(
        two_models[:1], title="t", run_info={"data_source_kind": "synthetic"}
    )
    assert SYNTHETIC_BANNER in synthetic


def test_per_class_table_rows(two_models) -> None:
    rows = per_class_table_rows(two_models)
    assert len(rows) == 2 * len(CLASSES)
    assert set(rows[0]) == {"model", "class", "precision", "recall", "f1", "support", "auc"}
    assert [row["model"] for row in rows[: len(CLASSES)]] == ["cnn"] * len(CLASSES)
    first = two_models[0].metrics.per_class[0]
    assert rows[0]["class"] == "airplane"
    assert rows[0]["precision"] == round(first.precision, 4)
    assert rows[0]["auc"] == round(first.auc, 4)
    assert isinstance(rows[0]["support"], int)


# --------------------------------------------------------------------------
# Noise bands, replicas and recipes
# --------------------------------------------------------------------------

EVIL = "<b>&evil</b>"


def _probs(y: np.ndarray, wrong: int) -> np.ndarray:
    """Probabilities right on every image but the first `wrong`."""
    k = len(CLASSES)
    probs = np.eye(k)[y] * 0.9 + 0.1 / k
    probs[:wrong] = np.eye(k)[(y[:wrong] + 1) % k] * 0.9 + 0.1 / k
    return probs


@pytest.fixture(scope="module")
def noise_sections() -> Sections:
    """A run with replicas: recipes compared across seeds, and a challenger within the noise."""
    y = np.arange(200) % len(CLASSES)
    statistics = compare_all(
        y, {"cnn": _probs(y, 60), "resnet50": _probs(y, 20)}, class_names=CLASSES, n_resamples=1000
    )
    recipes = RecipeComparison(
        models={
            "cnn": RecipeSummary(
                seeds=[42, 43, 44], accuracies=[0.7, 0.69, 0.71], mean=0.7, std=0.01
            ),
            "resnet50": RecipeSummary(
                seeds=[42, 43, 44], accuracies=[0.9, 0.88, 0.89], mean=0.89, std=0.01
            ),
        },
        pairs=[
            RecipePair(
                a="cnn",
                b="resnet50",
                difference={"estimate": 0.19, "ci_low": 0.1712, "ci_high": 0.2088},
                pvalue=0.000123,
                significant=True,
                better="resnet50",
                verdict=f"recipe resnet50 beats cnn across seeds {EVIL}",
            )  # fmt: skip
        ],
    )
    comparison = statistics.model_copy(update={"recipes": recipes})
    pair = compare_pair(
        y, _probs(y, 10), _probs(y, 30), name_a="champion", name_b="challenger",
        class_names=CLASSES, n_resamples=1000,
    )  # fmt: skip
    band = NoiseBand(
        points=0.1234,
        class_points={c: 0.2 for c in CLASSES},
        source="replicas",
        runs=3,
        detail=f"3 replicas of {EVIL}",
    )
    gate = {
        "cnn": GateDecision(
            model="cnn", track="nightly", decision="within-noise",
            reason=f"worse, but within the noise band {EVIL}",
            champion_run_id="20261126-020000-ab12cd34", comparison=pair, band=band,
        ),
        "resnet50": GateDecision(
            model="resnet50", track="nightly", decision="regression", reason="worse",
            champion_run_id="20261126-020000-ab12cd34", comparison=pair,
            band=band.model_copy(update={"points": 0.005, "detail": "history"}),
        ),
    }  # fmt: skip
    replicas = {
        model: [
            ReplicaRow(
                replica=i,
                seed=42 + i,
                val_accuracy=0.61 + i / 100,
                test_accuracy=0.6 + i / 100,
                kept=i == 1,
            )
            for i in range(3)
        ]
        for model in ("cnn", f"res{EVIL}")
    }
    return Sections(comparison=comparison, gate=gate, replicas=replicas)


def _section(page: str, heading: str) -> str:
    """The page from the <h2> `heading` to the next <h2>."""
    start = page.index(f"<h2>{heading}")
    end = page.find("<h2>", start + 4)
    return page[start : end if end >= 0 else len(page)]


def test_report_shows_noise_band_replicas_and_recipes(tmp_path, two_models, noise_sections):
    render_report(two_models, tmp_path, title="t", run_info={}, sections=noise_sections)
    page = (tmp_path / "index.html").read_text(encoding="utf-8")

    gate = _section(page, "vs champion")
    assert "<th>noise band</th>" in gate
    row = next(
        line for line in gate.splitlines() if line.startswith('<tr class="decision-within-noise">')
    )
    assert "<td>within-noise</td>" in row
    assert "±12.34 points (replicas: 3 replicas of &lt;b&gt;&amp;evil&lt;/b&gt;)" in row
    assert "per class ±20.00 points" in row
    assert '<tr class="decision-regression">' in gate and "±0.50 points (replicas: history)" in gate
    # within-noise is styled apart from a regression
    css = page[page.index("<style>") : page.index("</style>")]
    assert "tr.decision-within-noise" in css and "tr.decision-regression" in css
    within = re.search(r"tr\.decision-within-noise \{([^}]*)\}", css).group(1)
    regression = re.search(r"tr\.decision-regression \{([^}]*)\}", css).group(1)
    assert within != regression

    replicas = _section(page, "Replicas")
    assert "<h3>cnn</h3>" in replicas and "<h3>res&lt;b&gt;&amp;evil&lt;/b&gt;</h3>" in replicas
    assert "<th>final validation accuracy</th>" in replicas and "<th>test accuracy</th>" in replicas
    kept = [line for line in replicas.splitlines() if line.startswith('<tr class="kept">')]
    assert len(kept) == 2  # one per model
    assert "kept: best on validation data" in kept[0]
    assert '<td class="num">43</td>' in kept[0] and "0.6200" in kept[0] and "0.6100" in kept[0]
    assert replicas.count("kept: best on validation data") == 2

    recipes = _section(page, "Recipes across seeds")
    assert "About the recipes" in recipes
    assert "0.7000 ± 0.0100" in recipes and "0.8900 ± 0.0100" in recipes
    assert "42, 43, 44 (3)" in recipes
    assert "Recipes: recipe resnet50 beats cnn across seeds &lt;b&gt;&amp;evil&lt;/b&gt;" in recipes
    assert "<th>mean accuracy b − a (points, 95% CI)</th>" in recipes
    assert '<td class="num">19.00 (17.12 to 20.88)</td>' in recipes
    assert '<td class="num">0.000123</td>' in recipes and "<td>resnet50</td>" in recipes

    statistics = _section(page, "How sure is this comparison?")
    assert "about these two trained models" in statistics
    assert "<h3>cnn vs resnet50 (these two trained models)</h3>" in statistics
    assert "<strong>About these two trained models: " in statistics

    assert EVIL not in page and "<b>" not in page


def test_report_without_replicas_has_no_such_sections(tmp_path, two_models, noise_sections):
    comparison = noise_sections.comparison.model_copy(update={"recipes": None})
    sections = Sections(comparison=comparison, gate=noise_sections.gate)
    render_report(two_models, tmp_path, title="t", run_info={}, sections=sections)
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    assert "<h2>Replicas" not in page and "<h2>Recipes across seeds" not in page
    assert "these two trained models" not in page


def test_markdown_summary_shows_noise_band_replicas_and_recipes(two_models, noise_sections):
    text = markdown_summary(two_models, title="t", run_info={}, sections=noise_sections)
    line = next(x for x in text.splitlines() if x.startswith("- **cnn: within-noise**"))
    assert f"noise band ±12.34 points (replicas: 3 replicas of {EVIL})" in line
    assert "## Replicas" in text and "kept: replica 1 (best on validation data)" in text
    assert "## Recipes across seeds" in text
    assert "- **cnn**: mean test accuracy 0.7000 ± 0.0100 over 3 seeds" in text
    assert "- **Recipes cnn vs resnet50**: recipe resnet50 beats cnn across seeds" in text
    assert "- **About these two trained models: " in text


# --------------------------------------------------------------------------
# The page as a whole: valid HTML that leads with the answer
# --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def full_report(tmp_path_factory, two_models, noise_sections) -> tuple[Path, str]:
    """A report with every section: gate, statistics, replicas, recipes, a replay, and both
    banners."""
    y = np.arange(200) % len(CLASSES)
    pair = compare_pair(
        y, _probs(y, 10), _probs(y, 10), name_a="original", name_b="replay",
        class_names=CLASSES, n_resamples=1000,
    )  # fmt: skip
    replay = Replay(
        original_run_id="20261126-020000-ab12cd34",
        run_id="20261127-020000-cd34ab12",
        summary="2 of 2 model(s) reproduced their original predictions exactly",
        models={
            m: ReplayOfModel(
                identical_predictions="200",
                bitwise_identical_probabilities=True,
                max_abs_probability_difference=0.0,
                pair=pair,
            )
            for m in ("cnn", "resnet50")
        },
        fingerprint_changes=[
            FingerprintChange(entry="libraries.numpy", original="2.1", replay=EVIL)
        ],
    )
    out_dir = tmp_path_factory.mktemp("full-report")
    changes = DataChanges(
        version_id="a" * 64,
        champion_version_id="b" * 64,
        counts={
            "ant": {"train": 70, "val": 10, "test": 20},
            "bee": {"train": 7, "val": 1, "test": 2},
        },
        since_champion={"ant": ClassDelta(added=15, removed=1)},
        duplicates=2,
        skipped_total=3,
        skipped=[SkippedFile(key=f"ant/{EVIL}.png", reason="it is corrupt or not an image")],
    )
    balance = plot_class_balance(changes, out_dir / "class_balance.png")
    sections = Sections(
        comparison=noise_sections.comparison,
        gate=noise_sections.gate,
        replicas=noise_sections.replicas,
        replay=replay,
        data=changes,
        data_figures=[(balance, "class balance")],
    )
    run_info = {
        "data_source_kind": "synthetic",
        "stopped_by_budget": "cnn: after 1 of 3 epochs",
        "scale": "a small smoke run (1,000 training images, 2 epoch(s))",
    }
    render_report(two_models, out_dir, title="t", run_info=run_info, sections=sections)
    return out_dir / "index.html", (out_dir / "index.html").read_text(encoding="utf-8")


def test_report_shows_what_changed_in_the_data(full_report) -> None:
    _, page = full_report
    data = _section(page, "What changed in the data")
    assert "<code>aaaaaaaaaaaa</code>" in data and "<code>bbbbbbbbbbbb</code>" in data
    assert "+15 / −1" in data and "2 duplicate file(s)" in data and "3 file(s) skipped" in data
    assert "it is corrupt or not an image" in data and EVIL not in data  # escaped
    assert "The first 1 of 3" in data and 'alt="class balance"' in data


def test_report_is_valid_html(full_report, two_model_report) -> None:
    out_dir, _, _ = two_model_report
    assert html_problems(full_report[0], out_dir / "index.html") == []


def test_report_leads_with_the_answer_and_ends_with_the_settings(full_report, noise_sections):
    _, page = full_report
    headings = re.findall(r"<h2>([^<]*)</h2>", page)
    assert headings[0] == "Summary" and headings[1] == "Figures" and headings[-1] == "Run settings"
    assert headings.index("vs champion (track nightly)") > headings.index("Figures")
    # both banners come before the summary
    summary_at = page.index("<h2>Summary</h2>")
    assert page.index(SYNTHETIC_BANNER) < summary_at
    assert page.index("STOPPED BY BUDGET — cnn: after 1 of 3 epochs") < summary_at

    summary = _section(page, "Summary")
    comparison = noise_sections.comparison
    verdict = comparison.verdicts[0]
    assert "CI" in verdict and "McNemar p" in verdict  # the verdict carries interval and p-value
    assert f"About these two trained models: {html.escape(verdict)}" in summary
    assert "Recipes: recipe resnet50 beats cnn across seeds &lt;b&gt;" in summary
    assert "<th>accuracy (95% CI)</th>" in summary
    for model, m in comparison.models.items():
        low, high = m.accuracy.ci_low, m.accuracy.ci_high
        assert f"({low:.4f} to {high:.4f})" in summary, model
    assert '<tr class="decision-within-noise"><td>cnn</td>' in summary
    assert '<tr class="decision-regression"><td>resnet50</td>' in summary
    assert "<strong>cnn: within-noise</strong>" in summary
    assert '<p class="note">a small smoke run (1,000 training images, 2 epoch(s))</p>' in summary


def test_report_needs_no_javascript_and_prints(full_report) -> None:
    _, page = full_report
    assert "<script" not in page
    assert not re.search(r"<[^>]+\son[a-z]+=", page)  # no inline event handlers either
    css = page[page.index("<style>") : page.index("</style>")]
    print_css = css[css.index("@media print") :]
    assert "nav.contents { display: none; }" in print_css and "break-inside: avoid" in print_css
    # the contents link to every section by its anchor
    for anchor in re.findall(r'<a href="#([a-z-]+)">', page):
        assert f'<section id="{anchor}"' in page or f'id="{anchor}"' in page


def test_decision_words_in_the_css_and_templates_are_the_gate_s():
    """The stylesheet colours rows by decision (`tr.decision-<word>`): every word it names is
    one of `compare_models.runs.decision.DECISIONS`, and the templates spell none of them (they
    print the record's own `decision`)."""
    from compare_models.runs import decision

    templates = Path(decision.__file__).resolve().parent.parent / "report" / "templates"
    css = (templates / "report.css").read_text()
    styled = set(re.findall(r"\.decision-([a-z-]+)", css))
    assert styled == {decision.REGRESSION, decision.WITHIN_NOISE, decision.PROMOTED, decision.FIRST}
    assert styled <= set(decision.DECISIONS)
    for template in templates.glob("*.j2"):
        text = template.read_text()
        spelled = [w for w in decision.DECISIONS if f'"{w}"' in text or f"'{w}'" in text]
        assert spelled == [], f"{template.name} spells {spelled}: take them from the record"
