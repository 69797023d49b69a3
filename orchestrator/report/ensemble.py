"""Ensemble against the best single configuration: for each seed, the class probabilities of the top-k
configurations' final checkpoints (that seed's trials) are averaged on the validation split, and the ensemble's
accuracy is compared with the best configuration's own, paired over seeds (orchestrator.stats.paired).

It needs the job's optional predict(cfg, state) -> (probabilities, labels) (job.predict) and the sweep's Ray
storage with its trials' checkpoints; where either is missing it says so instead of a result.
"""

from __future__ import annotations

import html

from orchestrator import stats
from orchestrator.report import Section
from orchestrator.report._data import label

TITLE = "Ensemble of the top configurations against the best one"


def _unavailable(why: str) -> Section:
    return Section("ensemble", TITLE, {"result": None, "note": why}, [f"Ensemble: not computed: {why}"],
                   f"<p>Not computed: {html.escape(why)}</p>")


def _checkpoint_state(storage, trial: str, trial_id: str):
    import pyarrow.fs

    from orchestrator.storage.checkpoints import newest as newest_checkpoint
    from orchestrator.trial.trainable import load_state

    # the sweep's own trials, or an extension's (extensions/<k>/: orchestrator/launch/extension.py)
    for folder in [storage, *sorted(storage.glob("extensions/*"))]:
        found = newest_checkpoint(pyarrow.fs.LocalFileSystem(), str(folder / f"{trial}_{trial_id}"))
        if found is not None:
            return load_state(found[0])
    return None


def _config(store, run_id: str):
    from omegaconf import OmegaConf

    return OmegaConf.create(store.artifact_text(run_id, "config.yaml") or "{}")


def build(data, rows, cfg) -> Section | None:
    """The top-k configurations' predictions averaged, against the best configuration alone, seed by seed (the
    job's predict function on each trial's last checkpoint); unavailable, with the reason, where that cannot be
    done."""
    import numpy as np

    from orchestrator.trial.trainable import load_job

    k = int(cfg.get("ensemble_top_k", 3))
    top = [r for r in rows if r.config.rung == rows[0].config.rung][:k] if rows else []
    if len(top) < 2:
        return _unavailable(f"it needs two configurations or more at the best's step; this sweep has {len(top)}.")
    if data.storage_dir is None or not data.storage_dir.is_dir():
        return _unavailable(f"the sweep's Ray storage (its checkpoints) is not here ({data.storage_dir}).")
    best = top[0].config
    first = _config(data.store, next(iter(best.runs.values()))[0])
    if "job" not in first:
        return _unavailable("the best configuration's run has no config.yaml artifact (its trial's config).")
    if not first.job.get("predict"):
        return _unavailable(f"job {first.job.name} has no predict function (job.predict).")
    predict = load_job(str(first.job.predict), data.root)
    seeds = sorted(set.intersection(*(set(r.config.runs) for r in top)))
    ens, single, used = {}, {}, []
    for seed in seeds:
        probs, labels = [], None
        for r in top:
            run_id, trial_id = r.config.runs[seed]
            state = _checkpoint_state(data.storage_dir, r.config.trials[seed], trial_id)
            if state is None:
                return _unavailable(f"no checkpoint of trial {r.config.trials[seed]} in {data.storage_dir}.")
            p, labels = predict(_config(data.store, run_id), state)
            probs.append(np.asarray(p))
        ens[seed] = float((np.mean(probs, axis=0).argmax(1) == labels).mean())
        single[seed] = float((probs[0].argmax(1) == labels).mean())
        used.append(seed)
    r = stats.paired(ens, single)
    members = [label(t.config) for t in top]
    if r.n < 2:
        verdict = f"one shared seed: no claim (ensemble {ens[used[0]]:.4f}, best single {single[used[0]]:.4f})."
    elif r.p < stats.ALPHA:
        verdict = (f"the ensemble is {'better' if r.effect > 0 else 'worse'} than the best single configuration by "
                   f"{abs(r.effect):.4f} accuracy (95% CI {r.low:+.4f} to {r.high:+.4f}, {stats.TEST_NAME} "
                   f"p={r.p:.3g}, n={r.n} seeds).")
    elif not r.decidable:
        verdict = (f"cannot be decided with {r.n} seeds (effect {r.effect:+.4f}): the smallest p-value {r.n} paired "
                   f"seeds can give is {stats.min_p(r.n):.3g}; {stats.seeds_to_decide()} seeds could decide.")
    else:
        verdict = (f"no detectable difference between the ensemble and the best single configuration at n={r.n} "
                   f"(effect {r.effect:+.4f}, 95% CI {r.low:+.4f} to {r.high:+.4f}, {stats.TEST_NAME} p={r.p:.2g}); "
                   f"the smallest effect this design could detect is {r.detectable:.4f}.")
    text = [f"Ensemble of the top {len(top)} (prediction averaging of final checkpoints, validation accuracy): "
            + verdict]
    rows_html = "".join(f"<tr><td>{s}</td><td>{ens[s]:.4f}</td><td>{single[s]:.4f}</td></tr>" for s in used)
    page = (f"<p>Members: {html.escape('; '.join(members))}.</p><p class='verdict'>{html.escape(verdict)}</p>"
            f"<table><tr><th>seed</th><th>ensemble accuracy</th><th>best single accuracy</th></tr>{rows_html}</table>")
    return Section("ensemble", TITLE, {
        "members": members, "seeds": used, "ensemble_accuracy": {str(s): v for s, v in ens.items()},
        "best_single_accuracy": {str(s): v for s, v in single.items()}, "effect": r.effect, "ci_low": r.low,
        "ci_high": r.high, "p": r.p, "detectable": r.detectable, "verdict": verdict}, text, page)
