"""Leaderboard: one row per configuration, its mean over seeds with a 95 % t-interval, and which configurations
are indistinguishable from the best (paired t-tests over shared seeds, Holm-adjusted), said in plain words."""

from __future__ import annotations

import html
import math

from orchestrator import stats
from orchestrator.report import Section


def _f(x, digits=4) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def _p(x) -> str:
    return "-" if x is None else ("<0.001" if x < 0.001 else f"{x:.3f}")


def label(config) -> str:
    return " ".join(f"{k}={_short(v)}" for k, v in sorted(config.hp.items())) or config.id


def _short(v: str) -> str:
    """A value as a reader wants it: 0.0685 for 0.06850702318083854 (the JSON keeps every digit)."""
    try:
        return v if float(v) == int(float(v)) and "." not in v else f"{float(v):.4g}"
    except (ValueError, OverflowError):
        return v


def verdict(data, rows) -> list[str]:
    m = data.metric
    if not rows:
        return [f"No trial reported {m}: nothing to compare."]
    if max(r.stats.n for r in rows) < 2:
        lines = ["One seed per configuration: no claim of difference between configurations can be made "
                 "(a difference between two single runs may be seed luck). Run with sweep.seeds=[0,1,2]."]
        earlier = data.earlier_seed_sd
        if earlier:
            lines.append(f"For scale: in sweep {earlier['sweep']} of the same job, {m} varied by sd "
                         f"{earlier['sd']:.3g} between seeds of one configuration.")
        else:
            lines.append("No earlier multi-seed sweep of this job was found to say how much seeds vary.")
        return lines + repeated(rows)
    best = rows[0]
    top = [r for r in rows if r.config.rung == best.config.rung]
    tied = [r for r in top[1:] if r.vs_best.get("indistinguishable")]
    lines = [f"Best: {label(best.config)}: {m} {_f(best.stats.mean)} "
             f"(95% t-interval {_f(best.stats.low)} to {_f(best.stats.high)}, {best.stats.n} seeds)."]
    if len(top) > 1:
        runner = top[1]
        margin = abs(best.stats.mean - runner.stats.mean)
        if runner.vs_best.get("indistinguishable"):
            lines.append(f"The winner's margin over the runner-up ({label(runner.config)}) is {margin:.3g}, within "
                         f"seed noise (paired t-test over {runner.vs_best['pairs']} seeds, Holm-adjusted "
                         f"p={_p(runner.vs_best['p_holm'])}): the data do not say which of the two is better.")
        else:
            lines.append(f"The winner beats the runner-up ({label(runner.config)}) by {margin:.3g}, beyond seed "
                         f"noise (paired t-test, Holm-adjusted p={_p(runner.vs_best['p_holm'])}).")
        lines.append(f"{len(tied)} of the {len(top) - 1} other configurations that reached step {best.config.rung} "
                     f"are indistinguishable from the best (Holm-adjusted paired t-test, p >= {stats.ALPHA}).")
    sd, df = stats.pooled_sd({r.config.id: r.config.values for r in rows})
    if df:
        lines.append(f"Seeds of one configuration vary by sd {sd:.3g} (pooled, {df} degrees of freedom).")
    return lines + repeated(rows)


def repeated(rows) -> list[str]:
    twice = [r for r in rows if r.config.repeats]
    if not twice:
        return []
    return [f"{len(twice)} configuration(s) were drawn more than once by the searcher (identical hyperparameters): "
            "a seed's trials of the same configuration are averaged into one value ("
            + "; ".join(f"{label(r.config)}: {sum(r.config.repeats.values())} repeated trials" for r in twice[:3])
            + ")."]


def build(data, rows, cfg) -> Section:
    best_rung = rows[0].config.rung if rows else 0
    table = []
    for i, r in enumerate(rows, 1):
        table.append({"rank": i, "config_id": r.config.id, "hp": r.config.hp, "n_seeds": r.stats.n,
                      "mean": r.stats.mean, "sd": None if math.isnan(r.stats.sd) else r.stats.sd,
                      "ci_low": None if math.isnan(r.stats.low) else r.stats.low,
                      "ci_high": None if math.isnan(r.stats.high) else r.stats.high,
                      "rung": r.config.rung, "values": {str(s): v for s, v in sorted(r.config.values.items())},
                      "failed_seeds": r.config.failed, "trials": r.config.trials,
                      "p_vs_best": r.vs_best.get("p"), "p_holm_vs_best": r.vs_best.get("p_holm"),
                      "indistinguishable_from_best": r.vs_best.get("indistinguishable") if r.config.rung == best_rung
                      else None})
    words = verdict(data, rows)
    sd, df = stats.pooled_sd({r.config.id: r.config.values for r in rows})
    method = ("mean over seeds with a 95% Student-t interval; each configuration against the best by a paired "
              "t-test over the seeds both ran (scipy.stats.ttest_rel), p-values Holm-adjusted for the number of "
              "comparisons; indistinguishable: adjusted p >= 0.05 or fewer than two shared seeds. Only "
              "configurations at the best's step are compared (an early-stopped mean is of another fidelity).")
    text = [f"{'':2}{'configuration':44} {'seeds':>5} {'mean':>9} {'95% CI (t)':>21} {'step':>5}  vs best"]
    for row in table[:15]:
        mark = {True: "~ best", False: "worse", None: "stopped"}[row["indistinguishable_from_best"]]
        if row["rank"] == 1:
            mark = "BEST"
        ci = f"{_f(row['ci_low'])} .. {_f(row['ci_high'])}" if row["ci_low"] is not None else "-"
        name = label(rows[row["rank"] - 1].config)
        text.append(f"{row['rank']:>2} {name[:44]:44} {row['n_seeds']:>5} {_f(row['mean']):>9} {ci:>21} "
                    f"{row['rung']:>5}  {mark}")
    if len(table) > 15:
        text.append(f"   ... {len(table) - 15} more in report.html / report.json")
    text += words
    head = "".join(f"<th>{h}</th>" for h in ("#", "configuration", "seeds", "mean", "sd", "95% CI (t)", "step",
                                              "p vs best (Holm)", "vs best"))
    body = []
    for row in table:
        mark = {True: "indistinguishable", False: "worse", None: "stopped earlier"}[row["indistinguishable_from_best"]]
        mark = "best" if row["rank"] == 1 else mark
        ci = f"{_f(row['ci_low'])} – {_f(row['ci_high'])}" if row["ci_low"] is not None else "–"
        cls = ' class="tie"' if row["indistinguishable_from_best"] else ""
        body.append(f"<tr{cls}><td>{row['rank']}</td><td>{html.escape(label(rows[row['rank'] - 1].config))}</td>"
                    f"<td>{row['n_seeds']}</td><td>{_f(row['mean'])}</td><td>{_f(row['sd'])}</td><td>{ci}</td>"
                    f"<td>{row['rung']}</td><td>{_p(row['p_holm_vs_best'])}</td><td>{mark}</td></tr>")
    page = (f"<p class='verdict'>{'<br>'.join(html.escape(w) for w in words)}</p>"
            f"<table><tr>{head}</tr>{''.join(body)}</table><p class='method'>{html.escape(method)}</p>")
    best = table[0] if table else None
    return Section("leaderboard", "Leaderboard", {
        "metric": data.metric, "mode": data.mode, "method": method, "verdict": words, "rows": table,
        "best": best, "seed_sd": None if not df else sd, "seed_sd_df": df}, text, page)
