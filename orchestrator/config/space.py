"""Sweep spec (Hydra override grammar) -> Ray Tune search space, and sampled values -> overrides.

Hydra's OverridesParser reads each entry; this module maps what it returns onto Tune's domains:

    a,b  | choice(a,b)           -> tune.choice
    range(lo,hi[,step])          -> tune.choice over the range's values
    interval(lo,hi)              -> tune.uniform          int(interval(..))       -> tune.randint (hi inclusive)
    tag(log, interval(lo,hi))    -> tune.loguniform       int(tag(log, ...))      -> tune.lograndint
    tag(grid, choice(a,b)) / tag(grid, range(..))         -> tune.grid_search (every value, each sample)
    job/model=mlp,cnn | glob(*)  -> tune.choice over the config group's options

Hydra's own sweepers differ in one respect: Hydra's basic sweeper takes the cross product of a,b lists;
here they are sampled like every other dimension (num_samples draws), unless tagged `grid`.
The seed is not part of the space: it is a replicate, see `Space.seeds`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import BadInput

SEED_KEY = "seed"
LR_KEY = re.compile(r"(^|[._])(lr|learning_rate)$")  # a learning rate's key: what the preflight's NaN check
# runs at the bounds of, and what `danlu plan` warns of on a linear scale


@dataclass(frozen=True)
class Param:
    key: str  # a config key (lr, job.model.width) or a config group (job/model)
    expr: str  # the sweep expression as written
    kind: str  # choice | grid | uniform | loguniform | randint | lograndint
    values: tuple = ()  # for choice / grid
    low: float | int | None = None
    high: float | int | None = None
    is_group: bool = False  # a config group (job/model, scheduler): its values are option names

    def first(self) -> Any:
        """Its first value (an interval's low end): what plan() composes to check the key."""
        return self.values[0] if self.values else self.low

    def tune_domain(self):
        """Its Tune domain: tune.choice, grid_search, uniform, loguniform, randint or lograndint."""
        from ray import tune

        if self.kind == "choice":
            return tune.choice(list(self.values))
        if self.kind == "grid":
            return tune.grid_search(list(self.values))
        lo, hi = self.low, self.high
        if lo is None or hi is None:  # an interval's kinds below always have both bounds (param())
            raise AssertionError(f"{self.key}: {self.kind} without bounds")
        if self.kind == "uniform":
            return tune.uniform(lo, hi)
        if self.kind == "loguniform":
            return tune.loguniform(lo, hi)
        if self.kind == "randint":  # Tune's upper bound is exclusive; Hydra's interval includes it
            return tune.randint(int(lo), int(hi) + 1)
        if self.kind == "lograndint":
            return tune.lograndint(int(lo), int(hi) + 1)
        raise AssertionError(self.kind)


@dataclass
class Space:
    params: list[Param] = field(default_factory=list)
    seeds: list[int] = field(default_factory=lambda: [0])

    def param_space(self, domain=None) -> dict:
        """Tune's param_space for a variant generator: {"hp": {key: domain}, "seed": grid over seeds}.

        The seed sits beside the hyperparameters, never among them, so one sampled configuration runs
        under every seed (BasicVariantGenerator(constant_grid_search=True) keeps the sample fixed).
        `domain(param)` is each parameter's Tune domain (default: Param.tune_domain).
        """
        from ray import tune

        seed = tune.grid_search(list(self.seeds)) if len(self.seeds) > 1 else self.seeds[0]
        return {"hp": {p.key: (domain or Param.tune_domain)(p) for p in self.params}, SEED_KEY: seed}

    def describe(self) -> dict:
        """The space as written and the seeds: the parent run's space.yaml."""
        return {"space": {p.key: p.expr for p in self.params}, "seeds": list(self.seeds)}

    @property
    def group_keys(self) -> set[str]:
        """The keys that choose config-group options (job/model): a trial composes those in its worker."""
        return {p.key for p in self.params if p.is_group}

    def probe_overrides(self) -> list[str]:
        """One override per parameter (its first value): composing these checks every key exists."""
        return [override(p.key, p.first()) for p in self.params]


def parse_space(entries: dict[str, Any], seeds: list[int], group_options) -> Space:
    """Build the Space from `key -> expression` entries (config file and command line merged).

    group_options(group) lists a config group's options, for `job/model=glob(*)` and validation.
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    space = Space(seeds=_check_seeds(seeds))
    for key, expr in entries.items():
        expr = str(expr)
        try:
            (ov,) = parser.parse_overrides([f"{key}={expr}"])
        except HydraException as exc:
            raise BadInput(f"sweep.space.{key}: malformed sweep expression '{expr}': {str(exc).splitlines()[0]}") from None
        try:
            if key == SEED_KEY:
                space.seeds = _check_seeds(_discrete_values(ov, key, expr))
                continue
            options = group_options(key)
            if options or "/" in key:
                param = _group_param(ov, key, expr, options)
            else:
                param = _param(ov, key, expr)
        except (ValueError, TypeError) as exc:  # e.g. range(1,10,0): Hydra's values raise as Python would
            raise BadInput(f"sweep.space.{key}: '{expr}' has no valid values ({exc}).") from None
        space.params.append(param)
    return space


def _param(ov, key: str, expr: str) -> Param:
    from hydra.core.override_parser.types import IntervalSweep

    value = ov.value()
    tags: set[str] = getattr(value, "tags", set()) or set()
    unknown = tags - {"log", "grid"}
    if unknown:
        raise BadInput(f"sweep.space.{key}: unknown tag(s) {sorted(unknown)} in '{expr}'; valid tags: log, grid.")
    if isinstance(value, IntervalSweep):
        lo, hi = value.start, value.end
        if lo is None or hi is None:  # Hydra's grammar gives both; said, not assumed
            raise BadInput(f"sweep.space.{key}: an interval needs a low and a high bound: '{expr}'.")
        if "grid" in tags:
            raise BadInput(f"sweep.space.{key}: 'grid' needs discrete values, not an interval: '{expr}'.")
        if not lo < hi:
            raise BadInput(f"sweep.space.{key}: interval low must be below high, got low={lo}, high={hi} in '{expr}'.")
        is_int = isinstance(lo, int) and isinstance(hi, int)
        if "log" in tags:
            if lo <= 0:
                raise BadInput(f"sweep.space.{key}: a log interval needs low > 0, got low={lo} in '{expr}'.")
            return Param(key, expr, "lograndint" if is_int else "loguniform", low=lo, high=hi)
        return Param(key, expr, "randint" if is_int else "uniform", low=lo, high=hi)
    if "log" in tags:
        raise BadInput(f"sweep.space.{key}: 'log' applies to interval(...) only, not '{expr}'.")
    values = tuple(_discrete_values(ov, key, expr))
    return Param(key, expr, "grid" if "grid" in tags else "choice", values=values)


def _group_param(ov, key: str, expr: str, options: list[str]) -> Param:
    from hydra.core.override_parser.types import Glob

    if not options:
        raise BadInput(f"sweep.space.{key}: '{key}' is not a config group (no options found under conf/{key}/).")
    value = ov.value()
    if isinstance(value, Glob):
        chosen = value.filter(options)
        if not chosen:
            raise BadInput(f"sweep.space.{key}: '{expr}' matches no option of {key}; options: {', '.join(options)}.")
        return Param(key, expr, "choice", values=tuple(chosen), is_group=True)
    param = _param(ov, key, expr)
    if param.kind not in ("choice", "grid"):
        raise BadInput(f"sweep.space.{key}: a config group takes a list of options, e.g. {key}={','.join(options)}.")
    unknown = [v for v in param.values if str(v) not in options]
    if unknown:
        raise BadInput(
            f"sweep.space.{key}: unknown option(s) {', '.join(map(str, unknown))} for config group {key}; "
            f"valid options: {', '.join(options)}."
        )
    return Param(key, expr, param.kind, values=tuple(str(v) for v in param.values), is_group=True)


def _discrete_values(ov, key: str, expr: str) -> list:
    if not ov.is_discrete_sweep():
        if ov.is_sweep_override():
            raise BadInput(f"sweep.space.{key}: '{expr}' is not a discrete list of values.")
        return [ov.value()]  # a single value: a one-point dimension
    values = list(ov.sweep_iterator())
    if not values:
        raise BadInput(f"sweep.space.{key}: '{expr}' has no values.")
    return values


def _check_seeds(seeds) -> list[int]:
    seeds = list(seeds)
    if not seeds or not all(isinstance(s, int) and not isinstance(s, bool) for s in seeds):
        raise BadInput(f"sweep.seeds: a non-empty list of integers, e.g. [0, 1, 2]; got {seeds}.")
    if len(set(seeds)) != len(seeds):
        raise BadInput(f"sweep.seeds: each seed once; got {seeds}.")
    return seeds


def override(key: str, value: Any) -> str:
    """`key=value` in Hydra's grammar (quoting and escaping as Hydra's own serializer does).

    Hydra's serializer leaves strings such as "nan", "true" or "1e3" bare, which would read back as a
    float, a bool or a number: those are quoted."""
    from orchestrator.hydra_internals import value_as_override_text

    text = value_as_override_text(value)
    if isinstance(value, str) and read_value(text) != value:
        text = "'" + value.replace("'", "\\'") + "'"
        if read_value(text) != value:
            raise BadInput(f"{key}: the value {value!r} cannot be written as a Hydra override.")
    return f"{key}={text}"


def outside(space: dict[str, str], hp: dict[str, str]) -> list[str]:
    """The keys of `space` (key -> expression as written) whose value in `hp` (as a run's params hold it) the space
    does not hold: a configuration from an earlier space of an extended sweep (a key it lacks ran the base config's
    value). A config group's key, or an expression that does not parse, is not judged."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    out = []
    for key, expr in space.items():
        if "/" in key:
            continue
        try:
            (ov,) = parser.parse_overrides([f"{key}={expr}"])
            param = _param(ov, key, str(expr))
        except (HydraException, BadInput, ValueError, TypeError):
            continue
        value = read_value(hp[key]) if hp.get(key, "") != "" else None
        if param.values:
            held = value in param.values
        else:
            held = isinstance(value, (int, float)) and not isinstance(value, bool) and \
                param.low is not None and param.high is not None and param.low <= value <= param.high
        if not held:
            out.append(key)
    return out


def read_value(text: str) -> Any:
    """What Hydra reads `text` as (a number, a bool, a string, a list), or None if it cannot parse it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    try:
        (ov,) = OverridesParser.create().parse_overrides([f"k={text}"])
    except HydraException:
        return None
    return ov.value()


def config_id(hp: dict[str, Any]) -> str:
    """A short stable id of a configuration's hyperparameters, the seed left out: replicates share it."""
    text = "\n".join(sorted(override(k, v) for k, v in hp.items()))
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def short_label(hp: dict[str, Any]) -> str:
    """A configuration's one label, the same everywhere (MLflow run names after the trial id, the terminal, the
    report): `lr=0.01235 bs=64 width=128`, keys in the order given, each shortened to its last part's initials
    (batch_size: bs) unless two keys would then read alike, numbers to 4 significant digits. `hp` holds values,
    or their text as MLflow's params keep it: both give the same label."""
    def short(key: str) -> str:
        leaf = key.replace("/", ".").rsplit(".", 1)[-1]
        words = leaf.split("_")
        return "".join(w[0] for w in words) if len(words) > 1 else leaf

    names = [short(k) for k in hp]
    names = [n if names.count(n) == 1 else k for n, k in zip(names, hp, strict=True)]
    return " ".join(f"{n}={_fmt(v)}" for n, v in zip(names, hp.values(), strict=True))


def _fmt(v: Any) -> str:
    """4 significant digits for a number (as a value or as its text), a bool as Hydra writes it, else as it is."""
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, str):
        try:
            number = float(v)
        except ValueError:
            return v
        if number == int(number) and not any(c in v for c in ".eE"):
            return v
        v = number
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)
