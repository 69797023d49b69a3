"""Leaderboard: one row per configuration, its mean over seeds with a 95 % t-interval, and which configurations
are worse than the best, cannot be told from it, or cannot be decided with the seeds at hand (the exact sign-flip
permutation test over shared seeds, Holm-adjusted: orchestrator/stats.py); each row links to its runs in MLflow."""

from __future__ import annotations

import html
import math

from orchestrator import stats
from orchestrator.report import Section
from orchestrator.report._data import label


def _f(x, digits=4) -> str:
    return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}g}"


def _p(x) -> str:
    return "-" if x is None else ("<0.001" if x < 0.001 else f"{x:.3f}")


# a row's standing against the best (stats.versus_best's state; None: it stopped at an earlier step; running: a
# seed of it is still running, in a report of a running sweep)
MARKS = {"best": "BEST", "worse": "worse", "indistinguishable": "~ best", "undecided": "undecided",
         "untested": "untested", "running": "running", None: "stopped"}
WORDS = {"best": "best", "worse": "worse than the best", "indistinguishable": "cannot be told from the best",
         "undecided": "cannot be decided with these seeds", "untested": "untested", "running": "still running",
         None: "stopped earlier"}


def _state(row, best_rung: int) -> str | None:
    if row.config.rung != best_rung:
        return "running" if row.config.running else None
    return row.vs_best.get("state") or "untested"


def _mark(state, n: int, words: dict) -> str:
    text = words[state]
    return f"{text} (1 seed)" if state == "untested" and n < 2 else text


def verdict(data, rows) -> list[str]:
    """The leaderboard's own lines under its table: the seeds' spread, configurations drawn twice. (The verdict
    itself leads the report: orchestrator/report/_verdict.py.)"""
    if not rows:
        return [f"No trial reported {data.metric}: nothing to compare."]
    lines = []
    if max(r.stats.n for r in rows) < 2:
        lines.append("One seed per configuration: untested; no claim of difference between configurations can be "
                     "made (a difference between two single runs may be seed luck).")
        earlier = data.earlier_seed_sd
        if earlier:
            lines.append(f"For scale: sweep {earlier['sweep']} of the same job, metric and step ({earlier['step']}) "
                         f"measured a seed-to-seed sd of {earlier['sd']:.3g} for {data.metric}.")
        else:
            lines.append("No earlier multi-seed sweep of the same job, metric and step was found to say how much "
                         "seeds vary.")
        return lines + repeated(rows)
    sd, df = stats.pooled_sd({r.config.id: r.config.values for r in rows})
    if df:
        lines.append(f"Seeds of one configuration vary by sd {sd:.3g} (pooled, {df} degrees of freedom).")
    return lines + repeated(rows)


def repeated(rows) -> list[str]:
    """A note for configurations the searcher drew more than once: their same-seed trials are averaged into one
    value."""
    twice = [r for r in rows if r.config.repeats]
    if not twice:
        return []
    return [f"{len(twice)} configuration(s) were drawn more than once by the searcher (identical hyperparameters): "
            "a seed's trials of the same configuration are averaged into one value ("
            + "; ".join(f"{label(r.config)}: {sum(r.config.repeats.values())} repeated trials" for r in twice[:3])
            + ")."]


def build(data, rows, cfg) -> Section:
    """One row per configuration, best first: its mean, sd and interval over seeds, the step it reached, and its
    standing against the best (the exact sign-flip test, Holm-adjusted), each row linked to its runs."""
    from orchestrator.tracking import links

    best_rung = rows[0].config.rung if rows else 0
    # a store that MLflow's UI does not show gets no addresses of it
    base = links.ui_base(str(data.store.uri)) if getattr(data.store, "ui", False) else None
    table = []
    for i, r in enumerate(rows, 1):
        state = _state(r, best_rung)
        table.append({"rank": i, "config_id": r.config.id, "label": label(r.config), "hp": r.config.hp,
                      "n_seeds": r.stats.n, "mean": r.stats.mean, "sd": None if math.isnan(r.stats.sd) else r.stats.sd,
                      "ci_low": None if math.isnan(r.stats.low) else r.stats.low,
                      "ci_high": None if math.isnan(r.stats.high) else r.stats.high,
                      "rung": r.config.rung, "values": {str(s): v for s, v in sorted(r.config.values.items())},
                      "failed_seeds": r.config.failed, "trials": r.config.trials,
                      "runs": {str(s): rid for s, (rid, _) in sorted(r.config.runs.items())},
                      "p_vs_best": r.vs_best.get("p") if state not in (None, "running") else None,
                      "p_holm_vs_best": r.vs_best.get("p_holm") if state not in (None, "running") else None,
                      "state": state if state != "untested" or r.stats.n > 1 else "untested (1 seed)",
                      "earlier_space": r.config.earlier_space})
    words = verdict(data, rows)
    method = ("mean over seeds with a 95% Student-t interval, never narrower than the metric's resolution; each "
              f"configuration against the best by the {stats.TEST_NAME} over the seeds both ran "
              "(scipy.stats.permutation_test, exact up to 16 seeds), p-values Holm-adjusted for the number of "
              "comparisons. best: the highest mean; worse: adjusted p < 0.05; cannot be told from the best: adjusted "
              "p >= 0.05 where the seeds could have shown a difference; cannot be decided: too few seeds for any "
              "adjusted p to fall below 0.05 (n seeds give at best 2/2^n); untested: one seed. Only configurations "
              "at the best's step are compared (an early-stopped mean is of another fidelity).")
    text = [f"{'':2}{'configuration':44} {'seeds':>5} {'mean':>9} {'95% CI (t)':>21} {'step':>5}  vs best"]
    for row, r in zip(table[:15], rows, strict=False):
        ci = f"{_f(row['ci_low'])} .. {_f(row['ci_high'])}" if row["ci_low"] is not None else "-"
        mark = _mark(_state(r, best_rung), r.stats.n, MARKS) + (
            f" (earlier space: {', '.join(r.config.earlier_space)})" if r.config.earlier_space else "")
        text.append(f"{row['rank']:>2} {row['label'][:44]:44} {row['n_seeds']:>5} {_f(row['mean']):>9} {ci:>21} "
                    f"{row['rung']:>5}  {mark}")
    if len(table) > 15:
        text.append(f"   ... {len(table) - 15} more in report.html / report.json")
    text += words
    head = "".join(f"<th>{h}</th>" for h in ("#", "configuration", "runs", "seeds", "mean", "sd", "95% CI (t)", "step",
                                              "p vs best (Holm)", "vs best"))
    body = []
    shown = int(cfg.get("html_rows", 500))  # a page a browser opens at 10,000 trials; the rest: report.json
    for row, r in zip(table[:shown], rows, strict=False):
        state = _state(r, best_rung)
        ci = f"{_f(row['ci_low'])} – {_f(row['ci_high'])}" if row["ci_low"] is not None else "–"
        cls = ' class="tie"' if state == "indistinguishable" else ""
        to_runs = " ".join(_run_link(base, data.experiment_id, rid, r.config.trials.get(seed) or rid[:8])
                           for seed, (rid, _) in sorted(r.config.runs.items()))
        body.append(f"<tr{cls}><td>{row['rank']}</td><td>{html.escape(row['label'])}</td><td>{to_runs}</td>"
                    f"<td>{row['n_seeds']}</td><td>{_f(row['mean'])}</td><td>{_f(row['sd'])}</td><td>{ci}</td>"
                    f"<td>{row['rung']}</td><td>{_p(row['p_holm_vs_best'])}</td>"
                    f"<td>{html.escape(_mark(state, r.stats.n, WORDS))}"
                    + (f"; from an earlier space ({html.escape(', '.join(r.config.earlier_space))} outside the sweep's "
                       "space now)" if r.config.earlier_space else "") + "</td></tr>")
    in_ui = (f"<a target='_top' href='{html.escape(links.report(base, data.experiment_id, data.parent_id, 'report.json'))}'>"
             "in MLflow</a>, ") if base is not None else ""
    more = (f"<p>… {len(table) - shown} more configuration(s), ranked, in report.json (leaderboard.rows), beside this "
            f"page: {in_ui}<a href='report.json'>here</a>.</p>" if len(table) > shown else "")
    page = (f"<table><tr>{head}</tr>{''.join(body)}</table>{more}"
            f"<p>{'<br>'.join(html.escape(w) for w in words)}</p><p class='method'>{html.escape(method)}</p>")
    sd, df = stats.pooled_sd({r.config.id: r.config.values for r in rows})
    best = table[0] if table else None
    return Section("leaderboard", "Leaderboard", {
        "metric": data.metric, "mode": data.mode, "method": method, "notes": words, "rows": table,
        "best": best, "seed_sd": None if not df else sd, "seed_sd_df": df, "seed_sd_step": best_rung if df else None},
        text, page)


def _run_link(base: str | None, experiment_id: str, run_id: str, text: str) -> str:
    """A run's label, linked to its page in MLflow's UI where one shows the store's runs."""
    if base is None:
        return html.escape(text)
    from orchestrator.tracking import links

    return f"<a target='_top' href='{html.escape(links.run(base, experiment_id, run_id))}'>{html.escape(text)}</a>"
