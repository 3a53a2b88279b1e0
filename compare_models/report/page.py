"""The report's HTML page, rendered from the Jinja2 templates in compare_models/report/templates/.

The page leads with the answer and ends with the run's settings (`SECTIONS`): one template per
section, each given the whole context below and deciding from it whether it has anything to
say. Adding a section is a template and one `Section` in that list (and, if it needs data the
page does not have yet, a field of `report.Sections`). Every value is escaped by Jinja2's
autoescape; the numbers are written by the filters of `report_format`, which the markdown
summary uses too. The figures are embedded as data: URIs and the CSS is inline, so the single
file displays fully with no network access, without JavaScript, and prints (its print CSS).
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

from compare_models.report import format as fmt
from compare_models.report.data import ModelResult, Sections


@dataclass(frozen=True)
class Section:
    """One part of the page: its template, its anchor and its heading in the contents."""

    template: str
    id: str
    heading: str
    #: whether the run has anything for this section (given the page's context)
    shown: Callable[[Mapping[str, Any]], bool] = lambda context: True


#: The page in order: the answer, the figures, the details, the settings last.
SECTIONS: tuple[Section, ...] = (
    Section("summary.html.j2", "summary", "Summary"),
    Section("figures.html.j2", "figures", "Figures"),
    Section("gate.html.j2", "champion", "vs champion", lambda c: bool(c["gate"])),
    Section(
        "statistics.html.j2",
        "statistics",
        "How sure is this comparison?",
        lambda c: c["comparison"] is not None,
    ),
    Section("replicas.html.j2", "replicas", "Replicas", lambda c: bool(c["replicas"])),
    Section("recipes.html.j2", "recipes", "Recipes across seeds", lambda c: bool(c["recipes"])),
    Section("replay.html.j2", "replay", "Replay", lambda c: c["replay"] is not None),
    Section("data.html.j2", "data", "What changed in the data", lambda c: c["data"] is not None),
    Section("models.html.j2", "models", "Metrics per model"),
    Section("settings.html.j2", "settings", "Run settings"),
)


def _environment() -> Environment:
    env = Environment(
        loader=PackageLoader("compare_models.report", "templates"),
        autoescape=select_autoescape(("html", "html.j2"), default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        extensions=["jinja2.ext.do"],
    )
    env.filters.update(
        metric=fmt.fmt_metric,
        parameters=fmt.fmt_parameters,
        seconds=fmt.fmt_seconds,
        p=fmt.fmt_p,
        ci=fmt.ci,
        level=fmt.level,
        band=fmt.band_text,
        models_verdict=fmt.models_verdict,
        kept_class=lambda row: "kept" if row.kept else "",
        change_row=lambda c: [c.entry, c.original, c.replay],
    )
    return env


_ENV = _environment()


def _embedded(figures: Sequence[tuple[Path, str]]) -> list[dict[str, str]]:
    """Each figure as the template shows it: its PNG as a data: URI, and its caption."""
    return [
        {
            "src": "data:image/png;base64," + base64.b64encode(path.read_bytes()).decode("ascii"),
            "caption": caption,
        }
        for path, caption in figures
    ]


def render_page(
    results: Sequence[ModelResult],
    figures: Sequence[tuple[Path, str]],
    *,
    title: str,
    run_info: Mapping[str, object],
    sections: Sections,
) -> str:
    """The self-contained report page of `results`, its headline `figures` and `sections`."""
    comparison = sections.comparison
    gate = sections.gate or None
    context: dict[str, Any] = {
        "title": title,
        "results": list(results),
        "figures": _embedded(figures),
        "disagreement_figures": _embedded(sections.disagreement),
        "gate_figures": _embedded(sections.gate_figures),
        "comparison": comparison,
        "recipes": comparison.recipes if comparison is not None else None,
        "gate": gate,
        "track": next(iter(gate.values())).track if gate else None,
        "replicas": sections.replicas or None,
        "replay": sections.replay,
        "data": sections.data,
        "data_figures": _embedded(sections.data_figures),
        "run_info": dict(run_info),
        "table_metrics": fmt.TABLE_METRICS,
        "models_label": fmt.MODELS_LABEL,
        "kept_note": fmt.KEPT_NOTE,
    }
    banners = []
    if fmt.is_synthetic(run_info):
        banners.append(fmt.SYNTHETIC_BANNER)
    if fmt.budget_note(run_info):
        banners.append(fmt.BUDGET_BANNER.format(fmt.budget_note(run_info)))
    shown = [s for s in SECTIONS if s.shown(context)]
    return _ENV.get_template("page.html.j2").render(
        **context,
        banners=banners,
        sections=shown,
        contents=[(s.id, s.heading) for s in shown],
    )
