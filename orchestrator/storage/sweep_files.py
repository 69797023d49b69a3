"""A sweep's own files in its storage (<output_dir>/<sweep.name>/danlu/): its identity (its settings as composed, the
overrides it started with, its id, its search seed), its progress, and the record of a sweep that ended whole. The tracking journal
(orchestrator/tracking/journal.py) and the lock (orchestrator/storage/lock.py) live in the same folder."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from orchestrator.errors import BadInput, SweepFailed

# danlu's own files live in <storage>/danlu/, not beside Ray's: on a restore, Tune copies every *.json and
# *.pkl at the top of its experiment directory into a staging directory and syncs that back up later, which
# would put stale copies of danlu's files back (and leave a half-written one when the driver is killed then)
STATE_DIR = "danlu"
SAVED = "sweep.json"  # the overrides the sweep started with (for `danlu resume`), its id and search seed
PROGRESS = "progress.json"  # trials done/total, the best so far (orchestrator/run/progress.py; `danlu list` reads it)
MEASURED = "measured.json"  # the job's seconds per step in this sweep: what `danlu plan` costs its next sweep at
FINISHED = "finished.json"  # a sweep that ended whole: its last lines, so that its command prints them again
EXTENSIONS = "extensions"  # <storage>/extensions/<k>/: Tune's experiment of the sweep's k-th extension (`danlu extend`)
_OLD_LAYOUT = ("danlu.json", "mlflow_runs.json", "mlflow_journal.jsonl", "mlflow_journal.offset")


def state_dir(storage_dir: Path) -> Path:
    """Where danlu keeps a sweep's identity, its MLflow journal and trial->run map (the sweep's own files).
    A sweep stored by an earlier danlu (these files beside Ray's) has them moved here."""
    d = storage_dir / STATE_DIR
    if (storage_dir / _OLD_LAYOUT[0]).exists():
        d.mkdir(exist_ok=True)
        for name in _OLD_LAYOUT:
            target = d / (SAVED if name == "danlu.json" else name)
            if (storage_dir / name).exists() and not target.exists():
                os.replace(storage_dir / name, target)
    return d


# What a later command with the sweep's name may change: its name and where its files live (sweep.name, output_dir),
# how its storage is guarded (storage.*: a lower free-space margin to resume on a fuller disk), its budget
# (sweep.budget.*: a sweep stopped by its budget resumes with a larger one), where and how it runs (cluster.*,
# submit.*: a sweep restored after its node or its allocation was lost finds its Ray at another address, or starts
# one) and how its progress is drawn (progress.*). A resume honours each of these; every other setting is what the
# sweep is, and a resume that would ignore a change to one refuses it instead.
FREE = ("sweep.name", "output_dir", "storage", "sweep.budget", "cluster", "submit", "progress")


def _free(key: str) -> bool:
    return any(key == f or key.startswith(f + ".") for f in FREE)


def _identity(overrides: list[str]) -> list[str]:
    """The overrides that define a sweep stored by a danlu before its settings were saved: all but the FREE ones,
    in any order."""
    return sorted(o for o in overrides if not _free(o.lstrip("+~").split("=", 1)[0]))


def settings_of(p) -> dict[str, str]:
    """What a sweep is, key by key (Plan.identity less the FREE keys): what sweep.json keeps as its settings."""
    return {k: v for k, v in p.identity.items() if not _free(k)}


def changed(saved: dict[str, str], now: dict[str, str]) -> list[str]:
    """Each setting that differs, as `key: old -> new` (a key one side lacks: `(none)`)."""
    return [f"{k}: {saved.get(k, '(none)')} -> {now.get(k, '(none)')}"
            for k in sorted(saved.keys() | now.keys()) if saved.get(k) != now.get(k)]


SAVED_COPY = "sweep.copy.json"  # the identity twice: a file cut at any byte leaves the other


def read_identity(storage_dir: Path) -> dict | None:
    """The sweep's identity (danlu/sweep.json, or its copy where that one is damaged); None for a new sweep."""
    d = state_dir(storage_dir)
    damaged = []
    for name in (SAVED, SAVED_COPY):
        try:
            saved = json.loads((d / name).read_text())
            if isinstance(saved, dict) and isinstance(saved.get("overrides"), list):
                return saved
            damaged.append(f"{name}: not a sweep's identity")
        except FileNotFoundError:
            continue
        except (OSError, ValueError) as exc:
            damaged.append(f"{name}: {type(exc).__name__}")
    if damaged:
        raise SweepFailed(f"the sweep's identity in {d} cannot be read ({'; '.join(damaged)}): danlu cannot tell which "
                          "sweep this storage holds, nor find its MLflow runs. Nothing was changed. Its MLflow parent "
                          "run carries the same facts (tags danlu.sweep_id, danlu.search_seed, danlu.command): write "
                          f"them back into {d / SAVED} as {{\"overrides\": [...], \"sweep_id\": ..., "
                          "\"search_seed\": ...}, or choose another sweep.name.")
    return None


def saved_overrides(storage_dir: Path) -> list[str] | None:
    """The overrides a sweep stored at `storage_dir` started with, or None for a new sweep."""
    saved = read_identity(storage_dir)
    return saved["overrides"] if saved else None


def identify(p, overrides: list[str], resume: str) -> dict:
    """The sweep's identity in its storage (danlu/sweep.json): its settings (p.identity, less the FREE keys), the
    overrides it started with, an id that its MLflow parent run carries (so a restarted driver finds that run,
    whatever else it lost), and the seed of its search. Written before anything is launched; a later command with
    the same name must find the same settings (else BadInput naming each changed key, its old and new value, and
    `resume`, the command that resumes the sweep it holds)."""
    import random
    import uuid

    path = state_dir(p.storage_dir) / SAVED
    saved = read_identity(p.storage_dir)
    settings = settings_of(p)
    if saved is not None:
        if isinstance(saved.get("settings"), dict):
            diff = changed(saved["settings"], settings)
        else:  # stored before settings were saved: its overrides, in any order
            old, now = _identity(saved["overrides"]), _identity(overrides)
            diff = [f"overrides: {' '.join(old) or '(none)'} -> {' '.join(now) or '(none)'}"] if old != now else []
        if diff:
            shown = "; ".join(diff[:8]) + (f"; and {len(diff) - 8} more" if len(diff) > 8 else "")
            raise BadInput(
                f"sweep.name={p.cfg.sweep.name}: {p.storage_dir} holds a sweep started with other settings ({shown}). "
                f"A sweep goes on with the settings it started with (a changed conf file included): resume it with "
                f"`{resume}` once they are as they were, grow it with {_grow(p, resume)} (more samples, more seeds "
                f"or a new space: docs/review.md), or run the new settings as another sweep.name.")
        return saved
    seed = p.cfg.sweep.get("search_seed")
    saved = {"overrides": list(overrides), "settings": settings, "sweep_id": uuid.uuid4().hex,
             "search_seed": seed if seed is not None else random.randrange(2**31),
             "started": time.strftime("%Y-%m-%dT%H:%M:%S")}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"output_dir={p.storage_dir.parent}: the sweep's storage cannot be created there "
                       f"({exc.strerror or exc}); give a folder you can write, e.g. output_dir=outputs.") from None
    _write(path, saved, "Nothing was launched; fix that, then run the same command again.")
    return saved


def _grow(p, resume: str) -> str:
    """The command that extends the sweep: a Hydra app's own command with hydra.sweeper.extend=true."""
    if getattr(p, "app", None) is not None:
        return f"`{resume} hydra.sweeper.extend=true` and the new settings"
    return f"`danlu extend {p.cfg.sweep.name} ...`"


def _write(path: Path, saved: dict, then: str) -> None:
    """The identity written twice (its copy first), each atomically: a driver killed at any byte leaves one whole."""
    try:
        for name in (SAVED_COPY, SAVED):
            tmp = path.with_name(name + ".tmp")
            tmp.write_text(json.dumps(saved, indent=1))
            os.replace(tmp, path.with_name(name))
    except OSError as exc:
        from orchestrator.storage.disk import Fault, is_full

        fault = Fault("the sweep's identity (danlu/sweep.json)", str(path.parent), exc.strerror or str(exc),
                      is_full(exc))
        raise SweepFailed(f"{fault.describe()}. {then}") from None


def segment(saved: dict) -> int:
    """Which part of the sweep runs now: 0 for the sweep as it started, k after its k-th extension."""
    return len(saved.get("extensions") or [])


def tune_dir(storage_dir: Path, saved: dict) -> Path:
    """Tune's experiment of the sweep's current part: the sweep's folder itself, or extensions/<k>/ (Tune cannot add
    trials to an experiment it restores, ray#15177, so each extension is an experiment of its own)."""
    k = segment(saved)
    return storage_dir / EXTENSIONS / str(k) if k else storage_dir


def extend(storage_dir: Path, saved: dict, settings: dict[str, str], overrides: list[str], record: dict) -> dict:
    """The sweep's identity with one more extension: its settings and overrides are the extended ones from now on,
    `record` (what the extension changed and runs) appended. The record of a sweep that ended whole goes first: a
    driver killed between the two leaves a sweep its command resumes (and ends again), never an extension that
    says "nothing to run"."""
    try:
        (state_dir(storage_dir) / FINISHED).unlink(missing_ok=True)
    except OSError as exc:
        raise SweepFailed(f"{state_dir(storage_dir) / FINISHED}: cannot be removed ({exc.strerror or exc}); "
                          "nothing was changed.") from None
    kept = {k: v for k, v in saved.items() if k not in ("settings", "overrides", "extensions")}
    new = {"overrides": list(overrides), "settings": settings, **kept,
           "extensions": [*(saved.get("extensions") or []), record]}
    _write(state_dir(storage_dir) / SAVED, new, "The sweep is as it was; fix that, then extend it again.")
    return new


def state_dir_path(storage_dir: Path) -> Path:
    """danlu's folder of a sweep (not created, not migrated: for the lock, taken before anything is read)."""
    return storage_dir / STATE_DIR


def begun(storage_dir: Path) -> bool:
    """Whether the sweep was begun before: its identity exists (damaged or not: read_identity says which)."""
    d = storage_dir / STATE_DIR
    return (d / SAVED).exists() or (d / SAVED_COPY).exists() or (storage_dir / _OLD_LAYOUT[0]).exists()


def finished(storage_dir: Path) -> dict | None:
    """The record of a sweep that ended whole (danlu/finished.json), or None: not ended, or damaged (then the
    sweep's command restores it through Tune, as for any sweep, and writes the record again)."""
    try:
        done = json.loads((state_dir(storage_dir) / FINISHED).read_text())
        return done if isinstance(done, dict) and isinstance(done.get("lines"), list) and done.get("at") else None
    except (OSError, ValueError):
        return None
