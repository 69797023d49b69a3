"""`danlu extend NAME [overrides]`: more configurations, more seeds or a new space for a sweep that has ended, kept
in the same sweep: its storage, its MLflow parent run, its report.

An extension is decided here, under the sweep's lock and before anything is launched: which settings changed (only
sweep.num_samples, sweep.seeds and sweep.space.* may: anything else is refused, naming each key), what earlier
trials the tracking store holds (every configuration, its seeds' curves and means), and what the extension runs:
- more configurations (sweep.num_samples=N, the new total): a searcher that learns is told every earlier
  configuration's mean first (orchestrator/search/_replicates.py warm); one that does not draws new points, never one
  that ran (its module's `more`);
- more seeds (sweep.seeds=[...], a superset): every configuration, or the report's top K (--top K), under the new
  seeds only;
- a new space (sweep.space.KEY=...): new configurations from it; the earlier ones stay in the history and the
  report, marked as from an earlier space where they fall outside it.
More seeds and more configurations in one command are two extensions, the seeds first (`steps`).
ASHA's rungs start with the earlier trials' values at each rung (`carry`), so a new configuration is judged against
the old ones, and a configuration given more seeds is judged on its grown group. A budget given with an extension
(sweep.budget.*) is the extension's own: what the sweep had used when it began is kept in its record (budget_base).

The decision is kept in the sweep's identity (orchestrator/storage/sweep_files.py extend), so a driver killed at any
moment of the extension resumes the same extension with `danlu resume NAME` or the same `danlu extend` command (a
Slurm requeue's: once the extension has ended, that command has nothing to run and says so, as a sweep's does). A
sweep that has not ended (interrupted, stopped by its budget, a driver killed) is resumed to its end first by
`danlu extend` (orchestrator/cli.py), so that the extension is decided from every earlier trial. Tune's experiment
of the extension is <storage>/extensions/<k>/ (Tune cannot add trials to an experiment, ray#15177).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from orchestrator.errors import BadInput

if TYPE_CHECKING:
    from orchestrator.report._data import SweepData

# Where a changed setting may be grown by an extension; every other setting is what the sweep is
GROWS = ("sweep.num_samples", "sweep.seeds", "sweep.space.")
# Settings whose change makes the earlier trials and the new ones measure different things: refused with the reason
WHY = {"job.": "another job", "sweep.metric": "another metric", "sweep.mode": "another direction",
       "epochs": "another fidelity (trials of another length)", "scheduler.max_t": "another fidelity (trials of "
       "another length)"}
NEW_SWEEP = "Start a new sweep, or compare them with `danlu compare`."


class NotEnded(BadInput):
    """The sweep (or its newest extension) has not ended: `danlu extend` resumes it to its end first."""


@dataclass
class Request:
    """What the command line asked: the overrides that change the sweep and, for more seeds, the top K only."""

    overrides: list[str]
    top: int | None = None
    command: list[str] = field(default_factory=list)


@dataclass
class Target:
    """The sweep `danlu extend NAME overrides` (or `danlu submit --extend NAME overrides`) names, and the overrides
    that plan it: `extended()` for its extension (its own overrides, one of the same key replaced by the
    extension's), `resumed()` for its resume to its end (a sweep that has not ended goes on first)."""

    name: str
    saved: dict
    own: list[str]    # the extension's overrides, less where the sweep is stored and its name
    kept: list[str]   # the sweep's own overrides, likewise
    where: list[str]  # output_dir=..., as given

    @classmethod
    def of(cls, name: str, overrides: list[str]) -> Target:
        """BadInput where no sweep of that name is stored there, or it is a Hydra app's."""
        from pathlib import Path

        from orchestrator.storage.sweep_files import read_identity

        where = [o for o in overrides if o.startswith("output_dir=")]
        output_dir = where[-1].split("=", 1)[1] if where else "outputs"
        saved = read_identity(Path(output_dir, name))
        if saved is None:
            from orchestrator.storage.catalog import names

            known = names(Path(output_dir))
            raise BadInput(f"danlu extend {name}: no sweep of that name under {output_dir}/; "
                           + (f"the sweeps there: {', '.join(known)}." if known else "there are no sweeps there."))
        if any(o.startswith("app:") for o in saved["overrides"]):
            raise BadInput(f"danlu extend {name}: a Hydra app's sweep (hydra/sweeper=danlu): extend it with the "
                           f"app's own command, hydra.sweeper.name={name} hydra.sweeper.extend=true and the new "
                           "settings (hydra.sweeper.num_samples=N, hydra.sweeper.seeds=[...], a swept key).")
        placed = ("output_dir=", "sweep.name=")
        return cls(name, saved, [o for o in overrides if not o.startswith(placed)],
                   [o for o in saved["overrides"] if not o.startswith(placed)], where)

    def extended(self) -> list[str]:
        """The overrides of the sweep as the extension makes it."""
        return [*merged(self.kept, self.own), f"sweep.name={self.name}", *self.where]

    def with_own(self, own: list[str]) -> Target:
        """The same sweep with other overrides of the extension's (one part of a command that makes two)."""
        return Target(self.name, self.saved, list(own), self.kept, self.where)

    def resumed(self) -> list[str]:
        """The overrides of the sweep as it is (its resume)."""
        return [*self.kept, f"sweep.name={self.name}", *self.where]


def again(saved: dict, now: dict) -> bool:
    """The sweep's newest extension is the one these settings ask for (its command run again)."""
    return bool(saved.get("extensions")) and saved.get("settings") == now


def check_top(top, extending: bool, key: str = "--top", extend: str = "--extend NAME") -> None:
    """An extension's top K (the configurations more seeds go to): a whole number of at least 1, given with an
    extension (`extend` says how one is asked for). BadInput naming `key` otherwise."""
    if top is not None and (not isinstance(top, int) or isinstance(top, bool) or top < 1):
        raise BadInput(f"{key}={top}: the number of best configurations to give the new seeds, at least 1.")
    if top is not None and not extending:
        raise BadInput(f"{key}: the configurations an extension gives new seeds; it goes with {extend}.")


def steps(p, t: Target, top: int | None) -> list[tuple[list[str], int | None]]:
    """The extensions one command makes, each as (its own overrides, its --top): one; or two where it adds seeds
    and configurations (or a new space) together: first the seeds, to the configurations that ran (the top K where
    asked), then the new configurations under every seed (a searcher that learns is then told means over them all).
    A change no extension makes is not split: it is refused as it is, before anything runs. `p`: the sweep planned
    with the whole command (t.extended())."""
    from orchestrator.storage.sweep_files import settings_of

    old, now = t.saved.get("settings"), settings_of(p)
    if not isinstance(old, dict):
        return [(t.own, top)]
    keys = [k for k in old.keys() | now.keys() if old.get(k) != now.get(k)]
    seeds = [o for o in t.own if o.lstrip("+").split("=", 1)[0] == "sweep.seeds"]
    if "sweep.seeds" not in keys:
        last = (t.saved.get("extensions") or [{}])[-1]
        if seeds and top is not None and last.get("kind") == "seeds" and last.get("top") == top:
            top = None  # this command's seeds were added already (it was stopped in its second part): that part now
        return [(t.own, top)]
    if len(keys) == 1 or not seeds or not all(_grows(k) for k in keys):
        return [(t.own, top)]
    budget = [o for o in t.own if o.lstrip("+").startswith("sweep.budget.")]
    return [(seeds + budget, top), (t.own, None)]


def merged(saved: list[str], new: list[str]) -> list[str]:
    """The sweep's overrides with the extension's: one of the same key replaces the earlier one."""
    keys = {o.lstrip("+~").split("=", 1)[0] for o in new}
    return [o for o in saved if o.lstrip("+~").split("=", 1)[0] not in keys] + list(new)


def _grows(key: str) -> bool:
    return key in GROWS or key.startswith("sweep.space.")


def _why(key: str) -> str:
    for prefix, why in WHY.items():
        if key == prefix or key.startswith(prefix):
            return why
    return "a setting the earlier trials ran with"


def record(p, request: Request, saved: dict, say: Callable[[str], None]) -> dict:
    """Check the extension `p` (the sweep planned with the extension's overrides) asks of the sweep `saved` holds,
    decide its work from the earlier trials, and keep it in the sweep's identity. Returns the new identity. BadInput
    (exit 2, nothing changed) for a change no extension makes, a sweep that has not ended, or nothing to add. The same
    command again, once its extension was kept (a driver killed since), goes on with it."""
    from orchestrator.storage.sweep_files import extend, settings_of

    name = str(p.cfg.sweep.name)
    now = settings_of(p)
    if again(saved, now):  # the same command again: after a kill, or a Slurm requeue
        if not p.storage.finished():
            say(f"danlu: extension {len(saved['extensions'])} of {name} was begun and has not ended: it goes on")
        return saved  # (one that ended: nothing to run, its summary again, as for a sweep)
    rec = decide(p, request, saved, now)
    new = extend(p.storage_dir, saved, now, merged(saved["overrides"], request.overrides), rec)
    say(f"danlu: extension {rec['n']} of {name}: {describe(rec)}")
    return new


def preview(p, request: Request, saved: dict) -> list[str]:
    """What `danlu extend NAME ... --plan` prints: the extension's new work and its forecast, nothing run or kept."""
    from orchestrator import scheduler as schedulers
    from orchestrator.launch.forecast import forecast

    rec = decide(p, request, saved)
    configurations = len(rec["points"]) if rec.get("points") is not None else int(rec["learn"])
    seeds = len(rec["seeds"]) if rec.get("seeds") else len(p.space.seeds)
    f = forecast(configurations, seeds, schedulers.schedule(p.cfg.scheduler, p.cfg.get("epochs")))
    lines = [f"danlu plan: extension {rec['n']} of {p.cfg.sweep.name} ({'; '.join(rec['changed'])}): {describe(rec)}",
             f"  new trials: {f.trials} ({configurations} configuration(s) x {seeds} seed(s)), numbered from "
             f"t{rec['first_trial']:03d}; the sweep's {len(rec['earlier_trials'])} earlier trial(s) are not run again"]
    if f.steps is not None:
        lines.append(f"  expected trial-steps: {f.steps:.0f} (FIFO would run {f.fifo_steps:.0f})"
                     + (f"; ASHA's rungs start with the earlier trials' {len(rec['carry'])} record(s)"
                        if rec.get("carry") else ""))
    top = f"--top {request.top} " if request.top is not None else ""
    lines.append(f"  run it: danlu extend {p.cfg.sweep.name} {top}{' '.join(request.overrides)}".rstrip())
    return lines


def decide(p, request: Request, saved: dict, now: dict | None = None) -> dict:
    """The extension's record: what changed, what it runs, what the searcher and ASHA start from (nothing written).
    `now`: the extension's settings (sweep_files.settings_of), where the caller has them already."""
    from orchestrator.launch.budget import used
    from orchestrator.scheduler import saved_decisions
    from orchestrator.storage.sweep_files import changed, settings_of, tune_dir

    name = str(p.cfg.sweep.name)
    old = saved.get("settings")
    now = settings_of(p) if now is None else now
    if not isinstance(old, dict):
        raise BadInput(f"danlu extend {name}: the sweep was stored by an earlier danlu, without its settings, so what "
                       f"an extension changes cannot be checked. {NEW_SWEEP}")
    keys = [k for k in sorted(old.keys() | now.keys()) if old.get(k) != now.get(k)]
    refused = [k for k in keys if not _grows(k)]
    if refused:
        shown = "; ".join(f"{k}: {old.get(k, '(none)')} -> {now.get(k, '(none)')} ({_why(k)})" for k in refused[:8])
        raise BadInput(f"danlu extend {name}: an extension adds configurations, seeds or a new space to the same "
                       f"measurement, and this one changes what is measured: {shown}. {NEW_SWEEP}")
    seeds_old, seeds_new = list(_json(old.get("sweep.seeds"))), list(p.space.seeds)
    more_seeds = [s for s in seeds_new if s not in seeds_old]
    if "sweep.seeds" in keys and (len(more_seeds) + len(seeds_old) != len(seeds_new) or not more_seeds):
        raise BadInput(f"sweep.seeds={seeds_new}: an extension keeps every earlier seed and adds some (a superset of "
                       f"{seeds_old}, e.g. sweep.seeds={seeds_old + [max(seeds_old) + 1]}).")
    if more_seeds and len(keys) > 1:
        raise BadInput(f"danlu extend {name}: more seeds ({', '.join(k for k in keys if k != 'sweep.seeds')} changed "
                       "too): an extension adds seeds to the configurations that ran, or configurations under the "
                       "seeds there are; extend once for each.")
    if request.top is not None and not more_seeds:
        raise BadInput("--top: the configurations that get the new seeds; it goes with sweep.seeds=[...] (a superset).")
    if not keys:
        raise BadInput(f"danlu extend {name}: nothing to extend (the settings are the sweep's). Give "
                       "sweep.num_samples=N (a larger total), sweep.seeds=[...] (a superset of its seeds) or "
                       "sweep.space.KEY=EXPR (a new space).")
    earlier = Earlier.read(p, saved)
    work = _work(p, request, saved, earlier, more_seeds, old, keys)
    k = len(saved.get("extensions") or []) + 1
    rec = {"n": k, "at": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(request.command),
           "changed": changed(old, now), "overrides": list(request.overrides),
           "first_trial": earlier.next_trial, "earlier_trials": earlier.trial_ids, "carry": earlier.carry(p),
           "earlier_counts": earlier.counts(),
           "decisions": saved_decisions(tune_dir(p.storage_dir, saved)) or [],
           "budget_base": used(p.storage.own).as_record(), **work}
    return rec


def describe(rec: dict) -> str:
    """One line of what an extension runs."""
    seeds = rec.get("seeds")
    if rec.get("kind") == "seeds":
        top = f" (the top {rec['top']})" if rec.get("top") else ""
        return f"{len(rec['points'])} earlier configuration(s){top} x new seed(s) {seeds}"
    if rec.get("points") is not None:
        return f"{len(rec['points'])} new configuration(s), each under every seed"
    return (f"{rec['learn']} new configuration(s) from a searcher told the {len(rec.get('history') or [])} earlier "
            "one(s)")


def _json(text):
    import json

    try:
        return json.loads(text) if isinstance(text, str) else (text or [])
    except ValueError:
        return []


def _work(p, request: Request, saved: dict, earlier: Earlier, more_seeds: list[int], old: dict, keys: list[str]):
    """What the extension runs: {"points": [hp, ...], "seeds": [...]} (every point under those seeds), or
    {"learn": n, "history": [{"hp", "mean"}, ...]} (n new configurations from a searcher told the history)."""
    from orchestrator import search

    name = str(p.cfg.sweep.name)
    if more_seeds:
        configs = earlier.ranked(p, request.top)
        if not configs:
            raise BadInput(f"danlu extend {name}: no earlier configuration has a result to give more seeds to.")
        return {"kind": "seeds", "points": configs, "seeds": more_seeds, "top": request.top}
    seen = set(earlier.ids)
    module = search.module(p.cfg.search)
    if search.learns(p.cfg.search):
        if not getattr(module, "TOLD", False):
            raise BadInput(f"search.name={p.cfg.search.name}: this searcher cannot be told the earlier results (Tune's "
                           "wrapper of it has no add_evaluated_point), so more configurations from it would ignore "
                           "them; give more seeds instead, or run the new configurations as a sweep of search=optuna.")
        n = int(p.cfg.sweep.num_samples) - int(_json(old.get("sweep.num_samples")) or 0)
        if n < 1:
            raise BadInput(f"sweep.num_samples={p.cfg.sweep.num_samples}: the sweep's new total of configurations; it "
                           f"ran {old.get('sweep.num_samples')}, so give more (e.g. "
                           f"sweep.num_samples={2 * int(_json(old.get('sweep.num_samples')) or 1)}).")
        return {"kind": "learn", "learn": n, "history": earlier.history(p.space)}
    more = getattr(module, "more", None)
    if more is None:
        raise BadInput(f"search.name={p.cfg.search.name}: this searcher cannot grow a sweep by more "
                       "configurations; random, grid, arms and optuna can (any can by more seeds).")
    old_n = int(_json(old.get("sweep.num_samples")) or 0)
    points = more(p.space, p.cfg, int(saved.get("search_seed") or 0) + len(saved.get("extensions") or []) + 1,
                  seen, old_n)
    if not points:
        raise BadInput(f"danlu extend {name}: the new settings add no configuration that has not run "
                       f"({', '.join(keys)} changed); grow sweep.num_samples or widen sweep.space.")
    return {"kind": "configurations", "points": points, "seeds": list(p.space.seeds)}


@dataclass
class Earlier:
    """The sweep's trials as its tracking store holds them (orchestrator/report/_data.py)."""

    data: SweepData

    @classmethod
    def read(cls, p, saved: dict) -> Earlier:
        """The sweep's trials; NotEnded where it has not ended (a trial still RUNNING, or KILLED: it is resumed
        first)."""
        from orchestrator.report._data import load
        from orchestrator.tracking import open_store

        name = str(p.cfg.sweep.name)
        store = open_store(p.tracking_uri, str(p.cfg.tracking.experiment), p.store_kind)
        try:
            data = load(store, name)
        except Exception as exc:  # noqa: BLE001 - no parent run of that name: said as the reason
            raise BadInput(f"danlu extend {name}: its runs cannot be read from {p.tracking_uri} ({exc}).") from None
        if not p.storage.finished():
            open_ = [r for r in data.runs if r.status in ("RUNNING", "KILLED")]
            if open_ or data.tags.get("danlu.outcome") in ("interrupted", "budget", "disk_full"):
                raise NotEnded(f"danlu extend {name}: the sweep has not ended ({len(open_)} trial(s) running or "
                               f"killed, outcome {data.tags.get('danlu.outcome') or 'none yet'})")
        return cls(data)

    @property
    def ids(self) -> list[str]:
        """Every earlier configuration's id (danlu.config_id)."""
        return [c.id for c in self.data.configs]

    @property
    def trial_ids(self) -> list[str]:
        """Every earlier trial's Tune id: runs the extension's close leaves as they are."""
        from orchestrator import tags as T

        return [r.tags.get(T.TRIAL_ID) for r in self.data.runs if r.tags.get(T.TRIAL_ID)]

    @property
    def next_trial(self) -> int:
        """The number the extension's first trial takes: after every earlier trial's (t023 -> 24)."""
        from orchestrator import tags as T

        numbers = [int(t[1:]) for r in self.data.runs for t in [r.tags.get(T.TRIAL, "")] if t[1:].isdigit()]
        return max(numbers, default=-1) + 1

    def counts(self) -> dict:
        """The earlier trials' counts (completed, stopped early, failed), steps run and best single trial (its last
        value, label, Tune id): what the extension's summary adds to its own (orchestrator/run/summary.py)."""
        from orchestrator import tags as T

        out: dict = {"completed": 0, "stopped_early": 0, "failed": 0, "steps": 0, "best": None}
        curves = {rid: curve for c in self.data.configs for seed, curve in c.curves.items()
                  for rid in [c.runs.get(seed, ("", ""))[0]]}
        sign = 1 if self.data.mode == "max" else -1
        for r in self.data.runs:
            if T.ORPHANED in r.tags:
                continue
            outcome = r.tags.get(T.OUTCOME)
            out[outcome if outcome in ("completed", "stopped_early", "failed") else "failed"] += 1
            curve = curves.get(r.run_id)
            if curve:
                out["steps"] += curve[-1][0]
                v = curve[-1][1]
                if out["best"] is None or sign * v > sign * out["best"][0]:
                    out["best"] = [v, r.tags.get(T.TRIAL, ""), r.tags.get(T.TRIAL_ID, "")]
        return out

    def _hp(self, c, space) -> dict:
        from orchestrator.config.space import read_value

        return {k: read_value(v) for k, v in c.hp.items() if k in {p.key for p in space.params}}

    def history(self, space) -> list[dict]:
        """Each earlier configuration with a result: its values and its mean over seeds (for a searcher that
        learns)."""
        out = []
        for c in self.data.configs:
            if c.values and set(c.hp) == {p.key for p in space.params}:
                out.append({"hp": self._hp(c, space), "mean": sum(c.values.values()) / len(c.values)})
        return out

    def ranked(self, p, top: int | None) -> list[dict]:
        """The earlier configurations as the report ranks them (orchestrator/report rank), the top K where asked."""
        from orchestrator import report

        rows = report.rank(self.data)
        return [self._hp(r.config, p.space) for r in rows[:top] if set(r.config.hp) == {q.key for q in p.space.params}]

    def carry(self, p) -> list[dict]:
        """Each earlier trial's values at the rungs of the sweep's scheduler, and the step it ended at: what ASHA's
        rungs start with (orchestrator/scheduler/_tune_asha.py carry). Empty for a scheduler without rungs."""
        from orchestrator import scheduler as schedulers

        rungs = set(schedulers.schedule(p.cfg.scheduler, p.cfg.get("epochs")).rungs or ())
        if not rungs:
            return []
        out = []
        for c in self.data.configs:
            for seed, curve in c.curves.items():
                out.append({"config": c.id, "seed": seed, "last": curve[-1][0],
                            "values": [[s, v] for s, v in curve if s in rungs]})
        return out
