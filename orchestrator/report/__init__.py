"""The morning report: which configurations are really better, with numbers, from a sweep's MLflow runs.

`danlu report NAME` builds it; every sweep builds it at its end. It is made of sections, one module each in
this package, chosen by the `report` config group (report.sections, in order). A section module provides what
`SectionModule` states (build): build(data, rows, cfg) -> Section | None. A new section is one module here plus its name
in an orchestrator/conf/report/<name>.yaml's sections. Modules named _<name> are the report's machinery: _data (the sweep read
back through the tracking store), _verdict (the lead), _forms (HTML with the plots embedded, JSON, the terminal
table), _plots (matplotlib, headless), _publish (files, the parent run's artifacts and metrics).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

from orchestrator import plugins
from orchestrator.errors import BadInput

if TYPE_CHECKING:
    from orchestrator.report._data import Config
    from orchestrator.stats import Interval


@dataclass
class Section:
    """One part of the report, in every form it takes."""

    key: str  # its name in report.json (the module's name, by custom)
    title: str
    data: dict  # its part of report.json
    text: list[str] = field(default_factory=list)  # lines for the terminal
    html: str = ""  # its part of report.html; a plot is <img src="NAME.png">, embedded by _forms.as_html
    plots: dict[str, bytes] = field(default_factory=dict)  # NAME.png -> PNG bytes (orchestrator.report._plots.png)


@dataclass
class Row:
    """A configuration, ranked: what sections read of the statistics (rank())."""

    config: Config
    stats: Interval  # over its seeds
    vs_best: dict  # p, p_holm, pairs, state (stats.versus_best; {} when not compared: another rung than the best)


class SectionModule(Protocol):
    """What a report section module provides (a function; a module, not a class)."""

    def build(self, data, rows: list[Row], cfg) -> Section | None:
        """The section, or None when it has nothing to say for this sweep (it is then left out).

        Claims about configurations come from `rows` (each with its interval over seeds and its state against the
        best: best / worse / indistinguishable / undecided / untested), never from raw values alone: a section
        says "cannot be decided with n seeds" where that is the truth. A section must not raise for an unusual
        sweep (one configuration, one seed, no metric values): it returns None or says why in its text.

        Args:
            data: the sweep read back from its tracking store (orchestrator.report._data.SweepData: name, metric,
                mode, seeds, space, scheduler settings, configs with their values, curves, failed seeds and runs;
                parent tags in data.tags).
            rows: the configurations ranked best first (rank()).
            cfg: the `report` config group (report.sections and any settings of the sections).
        """


def __getattr__(name: str):
    """What the rest of danlu uses of the machinery, imported when first used (this package is imported by plan())."""
    import importlib

    where = {"load": "_data", "SweepData": "_data", "Config": "_data", "Verdict": "_verdict", "make": "_publish"}
    if name not in where:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{where[name]}"), name)


def available() -> list[str]:
    """The sections' names (report.sections chooses among them)."""
    return plugins.names(__name__)


# the report's counts (orchestrator/conf/report/default.yaml) and the least each may be
COUNTS = {"importance_repeats": 1, "top_curves": 0, "ensemble_top_k": 1, "html_rows": 1, "night_rows": 0}


def check(report_cfg) -> None:
    """report.sections: a list of available sections; the counts: integers (BadInput naming the key otherwise)."""
    from orchestrator.config.checks import integer

    sections = report_cfg.get("sections")
    if not sections or any(str(s) not in available() for s in sections):
        raise BadInput(f"report.sections={list(sections or [])}: a list of sections from {', '.join(available())}.")
    for key, low in COUNTS.items():
        if key in report_cfg:
            integer(f"report.{key}", report_cfg.get(key), low)


def rank(data) -> list[Row]:
    """Configurations best first: those that reached the furthest rung (step), then by their mean over seeds.
    Only configurations at the best's rung are compared with it: an early-stopped mean is of another fidelity."""
    from orchestrator import stats

    floor = stats.resolution([v for c in data.configs for v in c.values.values()])  # e.g. 1/450: intervals no finer
    rows = [Row(c, stats.t_interval(c.values.values(), floor=floor), {}) for c in data.configs if c.values]
    sign = 1 if data.mode == "max" else -1
    rows.sort(key=lambda r: (-r.config.rung, -sign * r.stats.mean))
    if rows:
        top = [r for r in rows if r.config.rung == rows[0].config.rung]
        verdicts = stats.versus_best({r.config.id: r.config.values for r in top}, rows[0].config.id)
        for r in rows:
            r.vs_best = verdicts.get(r.config.id, {})
    return rows


def build(data, report_cfg, lead=None) -> list[Section]:
    """The report's sections, led by its verdict (orchestrator/report/_verdict.py; `lead(data, rows) -> Verdict`
    in its place: danlu compare's own)."""
    import html

    from orchestrator.report import _verdict as verdict

    rows = rank(data)
    v = lead(data, rows) if lead is not None else verdict.block(data, rows)
    page = ("<div class='verdict' id='verdict-block'>" + "".join(
        f"<p><b>{html.escape(k)}</b> {html.escape(t)}</p>" for k, t in
        (("Verdict:", v.headline), ("Evidence:", v.evidence), ("Next:", v.next_step)) if t) + "</div>")
    out = [Section("verdict", "Verdict", v.as_json(), v.lines(), page)]
    for name in report_cfg.sections:
        section = plugins.load(__name__, str(name), "report", "section").build(data, rows, report_cfg)
        if section is not None:
            out.append(section)
    return out
