"""The morning report: which configurations are really better, with numbers, from a sweep's MLflow runs.

`danlu report NAME` builds it; every sweep builds it at its end. It is made of sections, one module each in
this package, chosen by the `report` config group (report.sections, in order). A section module has one
function, build(data, rows, cfg) -> Section | None: data is the sweep read back from MLflow
(orchestrator/report/data.py), rows the configurations ranked with their statistics (rank() below), cfg the
report config. The forms (HTML with the plots embedded, JSON, the terminal table) are in forms.py; where it
goes (files, the parent run's artifacts and metrics) in publish.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from orchestrator import parts
from orchestrator.errors import BadInput

_HELPERS = ("data", "forms", "publish", "plots", "verdict")


@dataclass
class Section:
    key: str
    title: str
    data: dict  # its part of report.json
    text: list[str] = field(default_factory=list)  # lines for the terminal
    html: str = ""  # its part of report.html; a plot is <img src="NAME.png">, embedded by forms.html
    plots: dict[str, bytes] = field(default_factory=dict)  # NAME.png -> PNG bytes


@dataclass
class Row:
    config: object  # data.Config
    stats: object  # stats.Interval over its seeds
    vs_best: dict  # p, p_holm, pairs, state (stats.versus_best; {} when not compared: another rung than the best)


def available() -> list[str]:
    return parts.names(__name__, _HELPERS)


def check(report_cfg) -> None:
    sections = report_cfg.get("sections")
    if not sections or any(str(s) not in available() for s in sections):
        raise BadInput(f"report.sections={list(sections or [])}: a list of sections from {', '.join(available())}.")


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
    """The report's sections, led by its verdict (orchestrator/report/verdict.py; `lead(data, rows) -> Verdict`
    in its place: danlu compare's own)."""
    import html

    from orchestrator.report import verdict

    rows = rank(data)
    v = lead(data, rows) if lead is not None else verdict.block(data, rows)
    page = ("<div class='verdict' id='verdict-block'>" + "".join(
        f"<p><b>{html.escape(k)}</b> {html.escape(t)}</p>" for k, t in
        (("Verdict:", v.headline), ("Evidence:", v.evidence), ("Next:", v.next_step)) if t) + "</div>")
    out = [Section("verdict", "Verdict", v.as_json(), v.lines(), page)]
    for name in report_cfg.sections:
        section = parts.load(__name__, str(name), _HELPERS, "report", "section").build(data, rows, report_cfg)
        if section is not None:
            out.append(section)
    return out
