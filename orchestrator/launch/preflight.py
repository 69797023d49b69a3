"""Know before you launch: the checks `danlu preflight` runs, and that every new `danlu sweep` runs first (the fast
ones: reach, metric, nan, overfit; --no-preflight skips them).

    reach     the tracking store and the sweep's storage answer and can be written; a cluster address answers
    metric    the base config's first reports: it reports sweep.metric (else bad input, exit 2)
    nan       no NaN or inf in any metric (a job's loss, its gradient norm) over the first reports, at both ends
              of the learning rate's range
    overfit   the job, shrunk as its config says (job.preflight), drives its training loss below a threshold
    memory    one report at the corner of the space that uses the most memory, in a fresh process, measured
    lr_find   (--lr-find) the LR range test: lr grows geometrically over a few hundred steps; suggests bounds

How a job is shrunk is the job's to say (jobs know nothing of danlu): its config's `job.preflight`, e.g.
    job.preflight: {overrides: [subset=32, dropout=0.0, weight_decay=0.0], loss: train_loss, below: 0.05,
                    steps: 200, lr: lr, memory: [batch_size, job.model.width]}
A job that declares nothing gets reach, metric and nan (on its base config), and overfit says SKIP, with why.

The memory corner: each key job.preflight.memory names (larger is hungrier: batch size, width, depth, sequence
length) takes its largest value in the space (an interval's upper bound, a list's largest number); every other
key keeps the base config's value. Its peak is measured in a process of its own: on CPU the resident set against
preflight.memory_mb (a trial's memory; null: this machine's available memory shared by the trials that run at
once), on a GPU torch's peak allocation against the device's memory times resources.gpu; an out-of-memory error
there is a FAIL.
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from orchestrator.config.compose import plain
from orchestrator.config.space import LR_KEY
from orchestrator.errors import BadInput

if TYPE_CHECKING:
    from orchestrator.launch import probe

PASS, WARN, FAIL, SKIP = "PASS", "WARN", "FAIL", "SKIP"
FAST = ("reach", "metric", "nan", "overfit")  # what a new sweep runs first
ALL = ("reach", "metric", "nan", "overfit", "memory")


@dataclass
class Check:
    """One check's verdict: PASS, WARN, FAIL or SKIP, with a one-line reason (and lines that say more)."""

    name: str
    status: str
    reason: str
    detail: list[str] = field(default_factory=list)
    bad_input: bool = False  # the user's setting is what is wrong (a metric the job never reports): exit 2

    def line(self) -> str:
        """The check as the terminal shows it."""
        return f"  {self.status:<4}  {self.name:<8} {self.reason}"


@dataclass
class Outcome:
    """Every check's verdict; the step time the base config's reports measured (for `danlu plan --probe`)."""

    checks: list[Check] = field(default_factory=list)
    step_s: float | None = None
    files: list[Path] = field(default_factory=list)  # what the checks wrote (the LR range test's curve)

    @property
    def failed(self) -> list[Check]:
        """The checks that FAILed."""
        return [c for c in self.checks if c.status == FAIL]

    def lines(self) -> list[str]:
        """The checks, one line each, and their details indented below them."""
        out = []
        for c in self.checks:
            out.append(c.line())
            out += [f"            {d}" for d in c.detail]
        return out

    def as_tags(self) -> dict[str, str]:
        """The verdicts as the sweep's parent run keeps them (danlu.preflight.<check>)."""
        return {f"danlu.preflight.{c.name}": f"{c.status}: {c.reason}"[:5000] for c in self.checks}


class Preflight:
    """The checks of one planned sweep (orchestrator.launch.plan.Plan), run in this process."""

    def __init__(self, p, say=print, outage_ok: bool = False):

        self.p, self.cfg, self.say, self.outage_ok = p, p.cfg, say, outage_ok
        declared = self.cfg.job.get("preflight")
        self.spec = plain(declared) if declared is not None else None
        self.root = p.config_dir.parent
        self.seed = int(p.space.seeds[0])
        self.settings = self.cfg.get("preflight") or {}
        self.reports = int(self.settings.get("reports", 3))
        self._worker: probe.Worker | None = None  # the child process the job runs in
        self._base = None  # the base config's probe (metric, nan, the step time)

    # -- composing what a check runs ---------------------------------------------------------------------------
    def config(self, values: dict | None = None, extra: tuple[str, ...] | list[str] = ()):
        """The base config with `values` set (space keys: what a trial with those values gets; config-group keys
        choose options), the seed, then `extra` overrides (the job's shrink)."""
        from orchestrator.config.compose import apply_overrides
        from orchestrator.trial.trainable import trial_config

        cfg = trial_config(self.p.trial_base, str(self.p.config_dir), self.p.base_overrides, self.p.space.group_keys,
                           dict(values or {}), self.seed)
        if extra:
            try:
                cfg = apply_overrides(cfg, list(extra))
            except BadInput as exc:
                raise BadInput(f"job.preflight.overrides: {exc}") from None
        return cfg

    def _run(self, cfg, reports, rule=None):
        """The job on `cfg` for at most `reports` reports, in the preflight's child process (started once)."""

        from orchestrator.launch import probe

        if self._worker is None:
            self._worker = probe.Worker(self.root, self.stall_s())
        return self._worker.run(plain(cfg), str(cfg.job.fn), reports, rule,
                                threads=int(max(1, float(self.cfg.resources.cpu))))

    def close(self) -> None:
        """End the child process the job ran in."""
        if self._worker is not None:
            self._worker.close()
            self._worker = None

    def base(self):
        """The base config's first `preflight.reports` reports (run once, read by metric and nan)."""
        if self._base is None:
            self._base = self._run(self.config(), self.reports)
        return self._base

    # -- the checks --------------------------------------------------------------------------------------------
    def run(self, names=FAST, lr_find: bool = False, first_fail: bool = False) -> Outcome:
        """Run the checks `names` (and the LR range test), in order; each one's line is said as it ends. With
        `first_fail`, the first FAIL ends the run (a sweep's: the rest would not launch it either)."""
        try:
            return self._checks(names, lr_find, first_fail)
        finally:
            self.close()

    def _checks(self, names, lr_find: bool, first_fail: bool) -> Outcome:
        out = Outcome()
        for name in names:
            check = getattr(self, f"check_{name}")()
            out.checks.append(check)
            self.say(check.line())
            for d in check.detail:
                self.say(f"            {d}")
            if first_fail and check.status == FAIL:
                return out
        if lr_find:
            check, files = self.check_lr_find()
            out.checks.append(check)
            out.files += files
            self.say(check.line())
            for d in check.detail:
                self.say(f"            {d}")
        if self._base is not None:
            out.step_s = self._base.step_s()
        return out

    def check_reach(self) -> Check:
        """The tracking store, the sweep's storage and a cluster address: they answer and can be written."""
        from orchestrator.launch import reach

        problems: list[str] = []
        notes: list[str] = []
        waits: list[str] = []
        bad_input = False
        for what, fn in (("tracking", lambda: reach.tracking(self.p.tracking_uri, str(self.cfg.tracking.experiment),
                                                           kind=self.p.store_kind)),
                         ("storage", lambda: reach.storage(self.p.storage_dir, int(self.cfg.storage.min_free_mb))),
                         ("cluster", lambda: reach.cluster(self.cfg.cluster))):
            try:
                note = fn()
                if note:
                    notes.append(note)
            except reach.Unreachable as exc:
                outage = what == "tracking" and exc.outage and self.outage_ok
                (waits if outage else problems).append(f"{what}: {exc}")
                # a server that never answered is a wrong address until it has: bad input, before the launch
                bad_input = bad_input or exc.bad_input or (what == "tracking" and exc.outage and not outage)
        if problems:
            return Check("reach", FAIL, problems[0], problems[1:], bad_input=bad_input)
        if waits:
            return Check("reach", WARN, f"{waits[0]}; the sweep's journal keeps every result until it answers",
                         notes)
        return Check("reach", PASS, "; ".join(notes))

    def check_metric(self) -> Check:
        """The base config reports sweep.metric in its first report."""
        metric = str(self.cfg.sweep.metric)
        b = self.base()
        if not b.history:
            why = b.error or "the job returned without calling ctx.report()"
            return Check("metric", FAIL, f"the base config ended before its first report: {why}",
                         _indent(b.tail()))
        if metric not in b.keys:
            from orchestrator.trial.ctx import missing_metric_message

            return Check("metric", FAIL, missing_metric_message(metric, b.keys), bad_input=True)
        note = f"; then it raised {b.error}" if b.error else ""
        status = FAIL if b.error else PASS
        return Check("metric", status, f"the job reports {metric} (and {', '.join(k for k in b.keys if k != metric) or 'nothing else'})"
                     f" from step {b.history[0][0]}; {len(b.history)} report(s) in {b.seconds:.1f} s{note}",
                     _indent(b.tail()) if b.error else [])

    def lr_key(self) -> str | None:
        """The learning rate's key: job.preflight.lr, else a space key named lr or learning_rate."""
        named = (self.spec or {}).get("lr")
        if named:
            return str(named)
        return next((prm.key for prm in self.p.space.params if LR_KEY.search(prm.key) and not prm.is_group), None)

    def lr_range(self) -> tuple[float, float] | None:
        """The learning rate's range in the space (bounds, or a list's smallest and largest), or None."""
        key = self.lr_key()
        prm = next((q for q in self.p.space.params if q.key == key), None)
        if prm is None:
            return None
        nums = _numbers(prm)
        return (min(nums), max(nums)) if nums else None

    def check_nan(self) -> Check:
        """No NaN or inf in any metric over the first reports: at both ends of the lr range where the space has
        one (with the job's shrink: each report a step), else on the base config's first reports."""
        bounds, key = self.lr_range(), self.lr_key()
        runs = []
        if bounds is None:
            runs.append(("the base config", self.base()))
        else:
            shrink = list((self.spec or {}).get("overrides") or [])
            for lr in sorted(set(bounds)):
                cfg = self.config({key: lr}, shrink)
                runs.append((f"{key}={lr:g}", self._run(cfg, int(self.settings.get("nan_reports", 5)))))
        for label, b in runs:
            bad = b.non_finite()
            if bad is not None:
                step, k, v = bad
                return Check("nan", FAIL, f"at {label}: {k} is {v} at step {step}",
                             [f"{k} by report: " + ", ".join(f"{x:.4g}" for x in b.series(k)),
                              "likely causes: a learning rate too high for this model (lower the space's upper bound), "
                              "a loss that takes log(0), or no gradient clipping"])
            if b.error and not b.history:
                return Check("nan", FAIL, f"at {label}: the job raised {b.error} before its first report",
                             _indent(b.tail()))
        where = " and ".join(label for label, _ in runs)
        n = max(len(b.history) for _, b in runs)
        loss = (self.spec or {}).get("loss")
        for label, b in runs:  # finite, but exploding: the next steps would be NaN
            curve = [x for x in b.series(str(loss))] if loss and loss in b.keys else []
            if len(curve) > 1 and curve[0] > 0 and max(curve) > 100 * curve[0]:
                return Check("nan", WARN, f"every metric finite over the first {n} report(s), but at {label} {loss} "
                             f"diverges: {curve[0]:.3g} -> {max(curve):.3g}",
                             [f"{loss} by report: " + ", ".join(f"{x:.3g}" for x in curve),
                              "the space's upper lr bound is likely too high for this model"])
        return Check("nan", PASS, f"every metric finite over the first {n} report(s) at {where}")

    def check_overfit(self) -> Check:
        """The job's shrink (job.preflight): its training loss falls below `below` within `steps` reports."""
        spec = self.spec or {}
        if not spec.get("loss") or spec.get("below") is None:
            return Check("overfit", SKIP, f"job {self.cfg.job.name} declares no job.preflight (overrides, loss, below, "
                         "steps): how to shrink it to a tiny batch is the job's to say")
        loss, below, steps = str(spec["loss"]), float(spec["below"]), int(spec.get("steps", 200))
        cfg = self.config({}, list(spec.get("overrides") or []))
        from orchestrator.launch.probe import Rule

        b = self._run(cfg, steps, Rule(loss, below=below))
        if not b.history:
            return Check("overfit", FAIL, f"the shrunk job ended before its first report: {b.error or 'no report'}",
                         _indent(b.tail()))
        if loss not in b.keys:
            return Check("overfit", FAIL, f"job.preflight.loss={loss}: the job does not report it; it reports "
                         f"{', '.join(b.keys)}")
        curve = b.series(loss)
        last = curve[-1]
        if math.isfinite(last) and last < below:
            return Check("overfit", PASS, f"{loss} {curve[0]:.3g} -> {last:.3g} < {below:g} in {len(curve)} step(s) "
                         f"({b.seconds:.1f} s)")
        shown = _sample(curve)
        causes = _causes(curve)
        return Check("overfit", FAIL, f"{loss} did not fall below {below:g} in {len(curve)} step(s): "
                     f"{curve[0]:.4g} -> {last:.4g}" + (f" (the job raised {b.error})" if b.error else ""),
                     [f"{loss} by step: " + ", ".join(f"{s}: {v:.4g}" for s, v in shown), *causes])

    def memory_corner(self) -> tuple[dict, list[str]]:
        """The corner of the space that uses the most memory: each key of job.preflight.memory at its largest
        value in the space; the keys it took, as `key=value`."""
        keys = list((self.spec or {}).get("memory") or [])
        corner = {}
        for prm in self.p.space.params:
            if prm.key not in keys or prm.is_group:
                continue
            nums = _numbers(prm)
            if nums:
                corner[prm.key] = max(nums)
        return corner, [f"{k}={v:g}" for k, v in corner.items()]

    def check_memory(self) -> Check:
        """One report at the memory corner, in a process of its own, its peak against a trial's memory."""

        from orchestrator.launch import probe

        corner, said = self.memory_corner()
        if not (self.spec or {}).get("memory"):
            return Check("memory", SKIP, f"job {self.cfg.job.name} names no job.preflight.memory keys (which grow "
                         "its memory: batch size, width); nothing to take the corner of")
        if not corner:
            return Check("memory", SKIP, f"none of job.preflight.memory ({', '.join((self.spec or {})['memory'])}) is swept: "
                         "every trial uses the base config's memory")
        cfg = self.config(corner)
        with probe.Worker(self.root, self.stall_s()) as fresh:  # a process of its own: the peak it measures is the corner's
            b = fresh.run(plain(cfg), str(cfg.job.fn), 1,
                          threads=int(max(1, float(self.cfg.resources.cpu))))
        at = ", ".join(said)
        if b.error:
            oom = "out of memory" in b.error.lower() or "OutOfMemory" in b.error or "can't allocate" in b.error
            return Check("memory", FAIL, f"at the corner ({at}): " + ("out of memory: " if oom else "") + b.error,
                         _indent(b.tail()))
        if b.cuda_peak_mb is not None:
            cap, what = _gpu_cap_mb(float(self.cfg.resources.gpu)), "GPU memory"
            peak = b.cuda_peak_mb
        else:
            cap, what = self.cpu_cap_mb(), "resident memory"
            peak = b.peak_rss_mb or 0.0
        verdict = FAIL if cap is not None and peak > cap else PASS
        cap_text = f"{cap:.0f} MB" if cap is not None else "no known limit"
        return Check("memory", verdict, f"at the corner ({at}): peak {what} {peak:.0f} MB "
                     f"{'>' if verdict == FAIL else 'within'} {cap_text} per trial")

    def stall_s(self) -> float:
        """How long a probe's job may go without a report: failure.stall_s where it is seconds, else 15 minutes."""
        limit = (self.cfg.get("failure") or {}).get("stall_s")
        return float(limit) if isinstance(limit, (int, float)) and not isinstance(limit, bool) else 900.0

    def cpu_cap_mb(self) -> float | None:
        """A trial's memory on CPU: its limit (resources.memory_mb, held while trials run), else preflight.memory_mb,
        else this machine's available memory over the trials that run at once."""
        set_mb = self.cfg.resources.get("memory_mb")
        if set_mb is None:
            set_mb = self.settings.get("memory_mb")
        if set_mb is not None:
            return float(set_mb)
        from orchestrator.cluster.placement import local_capacity, trials_at_once

        avail = _meminfo_mb("MemAvailable")
        if avail is None:
            return None
        at_once = trials_at_once(self.p.need, {"here": local_capacity(self.cfg.cluster)})
        return avail / max(1, at_once)

    def check_lr_find(self) -> tuple[Check, list[Path]]:
        """The LR range test (job.preflight.lr_find): lr grows geometrically, step by step; the loss against lr
        suggests the space's bounds. Its curve is drawn to <output_dir>/preflight/<job>-lr_find.png."""
        spec = (self.spec or {}).get("lr_find")
        if not spec:
            return Check("lr_find", SKIP, f"job {self.cfg.job.name} declares no job.preflight.lr_find (the overrides "
                         "that make its lr grow step by step)"), []
        loss = str(spec.get("loss") or (self.spec or {}).get("loss") or "train_loss")
        lr_metric = str(spec.get("lr_metric") or "lr")
        steps = int(spec.get("steps", 150))
        cfg = self.config({}, list(spec.get("overrides") or []))
        from orchestrator.launch.probe import Rule

        b = self._run(cfg, steps, Rule(loss, diverge=4.0))  # the usual stop: the loss far above where it began
        lrs, losses = b.series(lr_metric), b.series(loss)
        pairs = [(lr, x) for lr, x in zip(lrs, losses, strict=True) if math.isfinite(lr) and lr > 0]
        if len(pairs) < 10:
            return Check("lr_find", FAIL, f"only {len(pairs)} step(s) with {lr_metric} and {loss} reported"
                         + (f": {b.error}" if b.error else "")), []
        low, high, smooth = suggest_bounds(pairs)
        path = self.p.storage_dir.parent / "preflight" / f"{self.cfg.job.name}-lr_find.png"
        _plot_lr_find(pairs, smooth, low, high, path, loss)
        key = self.lr_key() or "lr"
        return Check("lr_find", PASS, f"suggested {key}='tag(log, interval({low:.2g}, {high:.2g}))' from "
                     f"{len(pairs)} steps, lr {pairs[0][0]:.2g} -> {pairs[-1][0]:.2g}",
                     [f"curve: {path}"]), [path]


def suggest_bounds(pairs: list[tuple[float, float]]) -> tuple[float, float, list[float]]:
    """LR range test bounds (Smith, 2017): the loss smoothed (an exponential moving average, bias-corrected);
    the upper bound is the lr where the smoothed loss is lowest, the lower bound the lr where it falls fastest
    (per log-lr), divided by 10 so the interval keeps a margin below it. Returns (low, high, the smoothed loss)."""
    beta, avg, smooth = 0.9, 0.0, []
    for i, (_, x) in enumerate(pairs, 1):
        avg = beta * avg + (1 - beta) * (x if math.isfinite(x) else 1e30)
        smooth.append(avg / (1 - beta**i))
    lrs = [lr for lr, _ in pairs]
    best = min(range(len(smooth)), key=smooth.__getitem__)
    slopes = [(smooth[i + 1] - smooth[i]) / (math.log(lrs[i + 1]) - math.log(lrs[i]) or 1e-12)
              for i in range(max(1, best))]
    steepest = min(range(len(slopes)), key=slopes.__getitem__) if slopes else 0
    high = lrs[best]
    low = min(lrs[steepest] / 10, high / 10)
    return low, high, smooth


def _plot_lr_find(pairs, smooth, low, high, path: Path, loss: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    lrs = [lr for lr, _ in pairs]
    ax.plot(lrs, [x for _, x in pairs], color="#bbbbbb", label=loss)
    ax.plot(lrs, smooth, color="#4c72b0", label=f"{loss}, smoothed")
    ax.axvspan(low, high, color="#55a868", alpha=0.2, label="suggested range")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(loss)
    finite = [x for x in smooth if math.isfinite(x)]
    if finite:
        ax.set_ylim(min(finite) * 0.9, min(max(finite), 3 * finite[0]) * 1.1)
    ax.legend()
    ax.set_title("LR range test")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _numbers(prm) -> list[float]:
    """A swept key's numbers: a list's numeric values, or an interval's two bounds."""
    if prm.values:
        return [v for v in prm.values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    return [] if prm.low is None else [prm.low, prm.high]


def _sample(curve: list[float], n: int = 8) -> list[tuple[int, float]]:
    idx = sorted({round(i * (len(curve) - 1) / max(1, n - 1)) for i in range(n)})
    return [(i + 1, curve[i]) for i in idx]


def _causes(curve: list[float]) -> list[str]:
    """Likely causes of a loss that would not fall, read from its shape."""
    first, last = curve[0], curve[-1]
    if not math.isfinite(last) or last > first * 1.05:
        return ["likely causes: the loss rose or became NaN: the learning rate is too high, or the loss has the "
                "wrong sign"]
    if last > first * 0.9:
        return ["likely causes: the loss barely moved: gradients do not reach the parameters (zero_grad after "
                "backward, a detach, the optimizer holding other tensors, frozen layers), or the lr is far too low"]
    return ["likely causes: the loss fell, then stalled: regularization still on (dropout, weight decay, "
            "augmentation), labels that do not match their inputs, or too little capacity or too few steps"]


def _indent(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()][-6:]


def _meminfo_mb(key: str) -> float | None:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _gpu_cap_mb(share: float) -> float | None:
    torch = sys.modules.get("torch")
    if torch is None or not torch.cuda.is_available():
        return None
    return torch.cuda.get_device_properties(0).total_memory / 2**20 * min(1.0, share or 1.0)


def run(p, names=FAST, lr_find: bool = False, say=print) -> Outcome:
    """The checks `names` of plan `p` (orchestrator.launch.plan.Plan), said as they end."""
    return Preflight(p, say).run(names, lr_find)
