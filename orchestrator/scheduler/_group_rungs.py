"""Seed-aware successive halving: the decisions, pure (no Ray), on configurations rather than trials.

ASHA (Li et al., 2020) records each trial's metric when it first reaches a rung (grace_period * rf^k reports)
and stops it if that value is below the (1 - 1/rf) quantile of what earlier trials recorded there. Here the
unit is a configuration's seed group: a rung's decision waits until every seed of the group that is still
alive has reached the rung, and compares the group's mean with the quantile of the means of the groups
recorded there before it. A configuration with one lucky seed and a bad mean is stopped; all its seeds stop.

Values are signed (multiplied by -1 for mode=min, as Tune's ASHA does), so larger is always better.
Ray's _Bracket does this for single trials and cannot be given groups, hence this module; its cutoff is the
same expression (numpy's nanpercentile at (1 - 1/rf) * 100 of the values recorded before).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Decision:
    rung: float  # the rung's milestone, in reports (training_iteration)
    config: str  # danlu.config_id
    mean: float  # the group's mean at the rung (signed: larger is better)
    seeds: int  # how many seeds the mean is over
    cutoff: float | None  # the quantile it was compared with (None: the first group at this rung)
    stop: bool


def milestones(grace_period: float, max_t: float, reduction_factor: float) -> list[float]:
    """ASHA's rungs for one bracket, as Ray's _Bracket makes them (ascending)."""
    n = int(math.log(max_t / grace_period) / math.log(reduction_factor) + 1)
    return [grace_period * reduction_factor**k for k in range(n)]


class GroupRungs:
    def __init__(self, rungs: list[float], reduction_factor: float, seeds: list[int]):
        self.rungs = sorted(rungs)
        self.rf = reduction_factor
        self.seeds = list(seeds)
        self.values: dict[float, dict[str, dict[int, float]]] = {r: {} for r in self.rungs}  # rung -> config -> seed -> v
        self.means: dict[float, dict[str, float]] = {r: {} for r in self.rungs}  # rung -> config -> group mean
        self.ended: dict[str, dict[int, float]] = {}  # config -> seed -> the iteration it ended at
        self.stopped: set[str] = set()
        self.decisions: list[Decision] = []

    def cutoff(self, rung: float) -> float | None:
        """The value a configuration's mean must reach at `rung` to go on: the (1 - 1/rf) quantile of the means
        recorded there before (None for the first)."""
        import numpy as np

        recorded = list(self.means[rung].values())
        return float(np.nanpercentile(recorded, (1 - 1 / self.rf) * 100)) if recorded else None

    def result(self, config: str, seed: int, iteration: float, value: float) -> tuple[bool, list[Decision]]:
        """A seed's report. Returns (stop this trial, the decisions this report completed). The value is recorded
        at every rung up to `iteration` that the seed has not recorded yet: one rung a report where reports come
        one step at a time, and never a rung left waiting forever for a seed that passed it unseen (a trial whose
        reports before a restore were not in the snapshot)."""
        if config in self.stopped:
            return True, []
        for rung in self.rungs:
            seen = self.values[rung].setdefault(config, {})
            if rung <= iteration and seed not in seen:
                seen[seed] = value
        made = self._decide(config)
        return config in self.stopped, made

    def waiting(self, config: str, iteration: float) -> float | None:
        """The lowest rung at or below `iteration`, below the last, whose decision for `config` is not made yet
        (None: none). A seed there waits (Tune's PAUSE) until the group's other seeds get there; the last rung is
        the trials' end and decides nothing that waiting could change."""
        if config in self.stopped:
            return None
        for rung in self.rungs[:-1]:
            if rung > iteration:
                break
            if config not in self.means[rung]:
                return rung
        return None

    def end(self, config: str, seed: int, iteration: float) -> list[Decision]:
        """A seed ended (finished, failed, or was stopped): rungs above `iteration` no longer wait for it."""
        self.ended.setdefault(config, {})[seed] = iteration
        return self._decide(config)

    def back(self, config: str, seed: int) -> None:
        """A seed that ended comes back (retried after a failure, or restored by a resumed sweep): rungs it has not
        reached wait for it again."""
        self.ended.get(config, {}).pop(seed, None)

    def _alive_at(self, config: str, rung: float) -> list[int]:
        ended = self.ended.get(config, {})
        return [s for s in self.seeds if not (s in ended and ended[s] < rung)]

    def _decide(self, config: str) -> list[Decision]:
        made = []
        for rung in self.rungs:
            seen = self.values[rung].get(config, {})
            if config in self.stopped or config in self.means[rung] or not seen:
                continue
            if any(s not in seen for s in self._alive_at(config, rung)):
                continue  # a seed still on its way to this rung
            mean = sum(seen.values()) / len(seen)
            cut = self.cutoff(rung)
            stop = cut is not None and mean < cut
            self.means[rung][config] = mean
            d = Decision(rung=rung, config=config, mean=mean, seeds=len(seen), cutoff=cut, stop=stop)
            self.decisions.append(d)
            made.append(d)
            if stop:
                self.stopped.add(config)
        return made

    def carry(self, earlier: list[dict], grown: set[str], decisions: list[dict]) -> None:
        """Start from an earlier part of the sweep (an extension): each earlier seed's signed value at each rung it
        reached and the step it ended at; the means of the groups that reached a rung whole (not of `grown`: the
        configurations given more seeds, decided again when their new seeds get there); the earlier decisions."""
        for e in earlier:
            config, seed = e["config"], int(e["seed"])
            for step, value in e["values"]:
                if step in self.values:
                    self.values[step].setdefault(config, {})[seed] = value
            self.ended.setdefault(config, {})[seed] = e["last"]
        for rung in self.rungs:
            for config, seen in self.values[rung].items():
                if config not in grown and seen:
                    self.means[rung][config] = sum(seen.values()) / len(seen)
        self.decisions = [Decision(**d) for d in decisions] + self.decisions

    def state(self) -> dict:
        """Every record as plain data (saved with Tune's snapshots; load() takes it back)."""
        return {
            "values": [[r, {c: list(v.items()) for c, v in self.values[r].items()}] for r in self.rungs],
            "means": [[r, self.means[r]] for r in self.rungs],
            "ended": {c: list(v.items()) for c, v in self.ended.items()},
            "stopped": sorted(self.stopped),
            "decisions": [asdict(d) for d in self.decisions],
        }

    def load(self, state: dict) -> None:
        """Take back what state() saved (after a resume)."""
        self.values = {r: {c: {int(s): v for s, v in items} for c, items in cs.items()} for r, cs in state["values"]}
        self.means = {r: dict(m) for r, m in state["means"]}
        self.ended = {c: {int(s): it for s, it in items} for c, items in state["ended"].items()}
        self.stopped = set(state["stopped"])
        self.decisions = [Decision(**d) for d in state["decisions"]]
