"""Compose configs from conf/ with Hydra, and split the command line into fixed and swept overrides.

Composition is Hydra's own (compose API, defaults lists, config groups); this module only finds the
config directory, turns Hydra's exceptions into one clear BadInput, and separates sweep overrides
(`lr=interval(0,1)`, `bs=32,64`) from plain ones using Hydra's OverridesParser.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from orchestrator.errors import BadInput

CONFIG_NAME = "danlu"  # the primary config: orchestrator/conf/danlu.yaml, which includes the project's config.yaml
PACKAGE_CONF = "pkg://orchestrator.conf"  # danlu's own config tree, on Hydra's search path behind the project's


def plain(cfg, resolve: bool = True) -> dict[str, Any]:
    """A DictConfig as plain dicts and lists: OmegaConf.to_container, typed for what a DictConfig gives."""
    from omegaconf import OmegaConf

    out = OmegaConf.to_container(cfg, resolve=resolve)
    if not isinstance(out, dict):
        raise TypeError(f"not a mapping: {type(cfg).__name__}")
    return out  # type: ignore[return-value]  # its keys are str: danlu's configs are YAML mappings


def find_config_dir(explicit: str | None = None) -> Path:
    """The project's conf/ to compose from: --config-dir, else $DANLU_CONFIG_DIR, else ./conf. It needs no
    config.yaml (job and sweep then come from the command line); danlu's own groups come from the package."""
    if explicit:
        if not Path(explicit).is_dir():
            raise BadInput(f"--config-dir {explicit}: no such directory.")
        return Path(explicit).resolve()
    for cand in (os.environ.get("DANLU_CONFIG_DIR"), "conf"):
        if cand and Path(cand).is_dir():
            return Path(cand).resolve()
    raise BadInput(f"No conf/ directory in {Path.cwd()}: run `danlu init` to make a project here, run danlu "
                   "in your project's directory, or pass --config-dir.")


def package_conf_dir() -> Path:
    """danlu's own config tree as a folder (orchestrator/conf/): the config dir of a sweep with no project conf/ of
    its own (a Hydra app's, swept by the sweeper plugin)."""
    import orchestrator.conf

    return Path(orchestrator.conf.__file__).resolve().parent


def use_package_conf() -> None:
    """Put danlu's own config tree on Hydra's search path, behind the project's conf/, for every Hydra
    initialisation in this process (the driver, and each Ray worker that composes a trial).

    Why a registered SearchPathPlugin and not one Hydra discovers in hydra_plugins/: a discovered one would add
    danlu's groups (scheduler, search, ...) to every Hydra app in the environment, where they would clash with the
    app's own; and why not `hydra.searchpath=[...]` as an override: Hydra looks the primary config up before it
    reads that override (and caches the miss), so the primary could not live in the package.
    Plugins.instance().register is Hydra's documented way to register a plugin class by hand."""
    global _registered
    if _registered:
        return
    from hydra.core.config_search_path import ConfigSearchPath
    from hydra.core.plugins import Plugins
    from hydra.plugins.search_path_plugin import SearchPathPlugin

    class DanluSearchPath(SearchPathPlugin):
        def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
            search_path.append(provider="danlu", path=PACKAGE_CONF)

    Plugins.instance().register(DanluSearchPath)
    _registered = True


_registered = False


def project_root(config_dir: Path) -> Path:
    """The directory that holds conf/ and jobs/: trials import jobs from here."""
    return config_dir.parent


@contextmanager
def hydra_context(config_dir: Path) -> Iterator[None]:
    """Hydra initialised on `config_dir` for the block (any earlier initialisation cleared first)."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    use_package_conf()
    GlobalHydra.instance().clear()  # a worker-style init (orchestrator.trial.trainable.compose_trial) may be in place
    with initialize_config_dir(str(config_dir), version_base="1.3", job_name="danlu"):
        yield


def compose(overrides: list[str]):
    """Compose conf/ + overrides (inside hydra_context). Hydra's errors become BadInput."""
    from hydra import compose as hydra_compose
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        return hydra_compose(CONFIG_NAME, overrides=list(overrides))
    except (HydraException, OmegaConfBaseException) as exc:
        raise BadInput(_explain(exc, overrides)) from None


def require_job(cfg, config_dir: Path) -> None:
    """BadInput unless the composed config names a job with a job.fn (the one thing danlu cannot default). Inside
    hydra_context (the job options are listed from the search path)."""
    from hydra.core.global_hydra import GlobalHydra

    options = GlobalHydra.instance().config_loader().get_group_options("job")
    job = cfg.get("job") if "job" in cfg else None
    have = f"the jobs in {config_dir}/job/: {', '.join(options)}" if options else f"{config_dir}/job/ holds none yet"
    if job is None:
        raise BadInput(f"job: no job chosen. Name one in {config_dir}/config.yaml's defaults list (`- job: NAME`, "
                       f"for job/NAME.yaml) or on the command line (job=NAME); {have}. `danlu init` makes one.")
    if not hasattr(job, "get") or not job.get("fn"):
        raise BadInput(f"job.fn: the job's config names no function; set `job: {{name: NAME, fn: module:function}}` in "
                       f"its {config_dir}/job/NAME.yaml (# @package _global_).")


def apply_overrides(cfg, overrides: list[str]):
    """Hydra's last composition step, on `cfg` in place: plain `key=value`, `+key=value` and `~key` overrides
    (not those that choose config options). compose(groups) then apply_overrides(cfg, rest) gives what
    compose(groups + rest) gives (tests/test_compose.py) without building the defaults tree again."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from orchestrator.hydra_internals import apply_overrides_to_config

    try:
        apply_overrides_to_config(OverridesParser.create().parse_overrides(list(overrides)), cfg)
    except (HydraException, OmegaConfBaseException) as exc:
        raise BadInput(_explain(exc, list(overrides))) from None
    return cfg


def set_values(cfg, values: dict):
    """A trial's values, set on `cfg` in place as Hydra sets a parsed `key=value` override
    (OmegaConf.update with merge; an unknown key is refused).

    Why not Hydra's override code (apply_overrides): the values are typed already, Hydra having parsed
    the sweep expressions in the driver, and importing Hydra's parser in a Ray worker cost 0.2 s of
    its first trial (measured); this needs OmegaConf only.
    """
    from omegaconf import OmegaConf
    from omegaconf.errors import ConfigAttributeError, ConfigKeyError

    for key, value in values.items():
        try:
            OmegaConf.update(cfg, key, value, merge=True)
        except (ConfigAttributeError, ConfigKeyError):
            raise BadInput(f"Unknown config key '{key}' in this trial's configuration. Check the spelling, "
                           "or see the composed config with `danlu run --cfg`.") from None
    return cfg


def _explain(exc: Exception, overrides: list[str]) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else type(exc).__name__
    if first.startswith("Could not override '") and "No match in the defaults list" in text:
        key = first.split("'")[1]
        return (f"{_find(overrides, key)}: your conf/config.yaml's defaults list has no `{key}` entry to choose. Add "
                f"`- {key}: null` to it (then {key}=NAME chooses one on the command line), or `- {key}: NAME`.")
    if "appears more than once in the final defaults list" in first or first.startswith("Multiple values for "):
        group = first.split()[0] if "appears" in first else first.split()[3].rstrip(".")
        return (f"config group '{group}' is chosen twice: danlu's own defaults (orchestrator/conf/danlu.yaml) choose "
                f"it already. In your conf/config.yaml write `- override {group}: NAME` to change danlu's choice, or "
                f"leave it out; there, list only what is yours (`- job: NAME`, `- sweep: NAME`).")
    if first.startswith("Could not override '"):
        key = first.split("'")[1]
        hint = _close_keys(key)
        return (
            f"Unknown config key '{key}' (in override '{_find(overrides, key)}'). "
            f"{hint}Check the spelling, or see the composed config with `danlu run --cfg`."
        )
    if "Could not find" in first or "Could not load" in first:
        # Hydra lists the options one per line after "Available options", then the search path
        lines = text.splitlines()
        options = [ln.strip() for ln in lines[1:] if ln.startswith(("\t", "    ")) and "provider=" not in ln]
        path = first.split("'")[-2] if first.count("'") >= 2 else first
        if "/" in path and options:
            group, option = path.rsplit("/", 1)
            return (f"Unknown option '{option}' for config group '{group}'. Available options: "
                    f"{', '.join(options)}. Choose one with {group}=<option>.")
        return f"{first.split(': ', 1)[-1]}."
    return f"Invalid config or override: {' '.join(text.split())}"


def _find(overrides: list[str], key: str) -> str:
    return next((o for o in overrides if o.lstrip("+~").split("=", 1)[0] == key), key)


def _close_keys(key: str) -> str:
    """Suggest existing keys near a mistyped one, from the composed default config."""
    import difflib


    try:
        base = plain(compose([]), resolve=False)
    except BadInput:
        return ""
    keys = [k for k, _ in flatten(base)]
    close = difflib.get_close_matches(key, keys, n=3, cutoff=0.6)
    return f"Did you mean: {', '.join(close)}? " if close else ""


def flatten(tree, prefix: str = "") -> Iterator[tuple[str, object]]:
    """Nested dicts as (dotted.key, leaf) pairs; lists stay leaves."""
    if isinstance(tree, dict):
        for k, v in tree.items():
            yield from flatten(v, f"{prefix}{k}.")
    else:
        yield prefix[:-1], tree


@dataclass
class CommandLine:
    """The user's overrides, split by Hydra's parser into plain ones and sweep ones."""

    fixed: list[str] = field(default_factory=list)  # e.g. epochs=5, experiment=digits_lr
    sweep: dict[str, str] = field(default_factory=dict)  # key -> sweep expression, e.g. lr -> interval(0,1)


def split_overrides(overrides: list[str]) -> CommandLine:
    """The command line split into sweep overrides (a choice, a range, an interval: Hydra's sweep grammar) and
    fixed ones (everything else), each parsed by Hydra's own parser; a typo is bad input naming it."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    out = CommandLine()
    for text in overrides:
        try:
            (ov,) = parser.parse_overrides([text])
        except HydraException as exc:
            detail = str(exc).splitlines()[0]
            raise BadInput(
                f"Malformed override '{text}': {detail}. Sweep values use Hydra's grammar, e.g. "
                "lr='tag(log, interval(1e-4, 1e-1))', batch_size=32,64, width='choice(64,128)'."
            ) from None
        if ov.is_sweep_override():
            if ov.is_add() or ov.is_delete():
                raise BadInput(f"'{text}': a swept key cannot be added (+) or deleted (~); sweep an existing key.")
            out.sweep[ov.get_key_element()] = text.split("=", 1)[1]
        else:
            out.fixed.append(text)
    return out


def split_fixed(fixed: list[str], loader) -> tuple[list[str], list[tuple[str, object]], list[str]]:
    """The overrides that choose config-group options (they shape the defaults); the (key, value) of the
    plain ones, whose values must fit those defaults (orchestrator/config/value_types.py); and the text of every
    override that sets, adds or deletes a value (Hydra's `hydra.*` settings leave the job's config alone)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    groups: list[str] = []
    values: list[tuple[str, object]] = []
    rest: list[str] = []
    for text in fixed:
        (ov,) = parser.parse_overrides([text])
        key = ov.key_or_group
        if ov.package is not None or "/" in key or loader.get_group_options(key):
            groups.append(text)
        elif not key.startswith("hydra"):
            rest.append(text)
            if not (ov.is_add() or ov.is_delete() or ov.is_force_add()):
                values.append((key, ov.value()))
    return groups, values, rest
