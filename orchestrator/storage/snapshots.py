"""Tune's snapshot files: checked before a restore, and never the only copy.

A sweep is restored from the files Tune keeps at the top of its storage: `tuner.pkl` (the Tuner, written
once), and per driver session `experiment_state-<S>.json` (the trials), the searcher's state
(`basic-variant-state-<S>.json`, `search_gen_state-<S>.json`, `searcher-state-<S>.pkl`, all pickles despite
some names) and `callback-states-<S>.pkl` (danlu's scheduler state). Tune writes them in a staging folder
and copies every one of them to the storage at each sync, in place: a driver killed during that copy, or a
disk that fills, leaves any of them cut short or empty. Tune then fails to restore (`pickle.loads`:
EOFError) or, for the experiment state, logs "Failed to restore the run state" and starts an empty
experiment as if the sweep were new.

So danlu
- keeps its own copy (`Keeper`): after each of Tune's snapshots (at most every few seconds) the staging
  folder's files, a consistent set written by this process, go into a new generation folder under
  `outputs/NAME/danlu/tune/`, made current by an atomic rename; the previous generation stays;
- checks every Tune file before a restore (`repair`): the file must load. When one does not, the sweep is
  restored from danlu's copy, whole, or, without one, from the newest older session whose files load (the
  damaged session's files are set aside, never deleted). Which, and why, is said. When nothing can be
  restored, the sweep stops (exit 1), naming the files and what to do: it never carries on as an empty
  experiment.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

TUNER = "tuner.pkl"
STATE = "experiment_state-"
_SESSION = re.compile(r"^(?:experiment_state|basic-variant-state|search_gen_state|searcher-state|callback-states)"
                      r"-(.+)\.(?:json|pkl)$")
KEEP_DIR = "tune"  # under the sweep's danlu/ folder
ASIDE_DIR = "set-aside"


class Unrestorable(Exception):
    """No snapshot of the sweep can be read, and danlu holds no copy: the sweep stops (exit 1)."""


def newest_loadable(folder, pattern: str):
    """What the newest file matching `pattern` in `folder` holds (plain pickle: Tune's searcher and callback states
    are plain data), or None. Newest by name, as Tune's own _load_newest_checkpoint picks it (the name holds the
    session's start time; not by mtime: Tune copies every session's file back into storage at each sync). A file cut
    short (a driver killed while Tune wrote it, or read while it is written) is passed over for the one before."""
    import glob
    import pickle

    for path in sorted(glob.glob(os.path.join(str(folder), pattern)), reverse=True):
        try:
            with open(path, "rb") as f:
                return pickle.load(f)
        except Exception:  # noqa: BLE001 - cut at any byte, pickle raises any of a dozen errors
            continue
    return None


def tune_files(folder: Path) -> list[Path]:
    """Tune's top-level files in an experiment folder (what Tune copies down on a restore), oldest session first."""
    try:
        names = os.listdir(folder)
    except FileNotFoundError:
        return []
    return [Path(folder, n) for n in sorted(names)
            if (n == TUNER or _SESSION.match(n)) and os.path.isfile(os.path.join(folder, n))]


def session(name: str) -> str | None:
    """The session a Tune state file belongs to (the timestamp in its name), or None for another file."""
    m = _SESSION.match(name)
    return m.group(1) if m else None


def problem(path: Path) -> str | None:
    """Why Tune could not load this file (None if it loads): empty, cut short, not JSON, not a pickle."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if not data:
        return "empty (0 bytes)"
    if path.name.startswith(STATE):
        try:
            state = json.loads(data)
        except ValueError as exc:
            return f"not valid JSON ({getattr(exc, 'msg', exc)} at byte {getattr(exc, 'pos', '?')} of {len(data)})"
        if not isinstance(state, dict) or "trial_data" not in state or "runner_data" not in state:
            return "not a Tune experiment state"
        return None
    import ray.cloudpickle as cloudpickle

    try:
        cloudpickle.loads(data)
    except Exception as exc:
        return f"cannot be unpickled ({type(exc).__name__}: {' '.join(str(exc).split())[:120]}; {len(data)} bytes)"
    return None


@dataclass
class Repair:
    """What `repair` found and did."""

    notes: list[str] = field(default_factory=list)  # for the terminal
    rebuild_tuner: bool = False  # tuner.pkl is gone: a new Tuner must write it before Tuner.restore
    restored: bool = False  # Tune's files were replaced or set aside


class Keeper:
    """danlu's copy of Tune's snapshot files, one consistent set per generation folder."""

    def __init__(self, storage: Path, every_s: float = 2.0, on_error: Callable[[OSError, str], None] | None = None):
        self.storage = Path(storage)
        self.dir = self.storage / "danlu" / KEEP_DIR
        self.every_s, self.on_error = every_s, on_error
        self._took = 0.0  # seconds the last copy took: copies come at most every max(every_s, 19 x that), as
        # Tune paces its own snapshots (at most 5% of the driver's time)
        self._last = 0.0
        self._seen: dict[str, tuple[int, int]] | None = None
        self.failed = False

    def keep(self, staging: str | None, force: bool = False) -> bool:
        """Copy the staging folder's files (a set Tune wrote whole, in this process) if they changed."""
        if staging is None or self.failed or (
                not force and time.monotonic() - self._last < max(self.every_s, 19 * self._took)):
            return False
        if not force:  # a look costs a listing and a stat per file (and Tune's loop steps many times a second)
            self._last = time.monotonic()
        files = {p.name: p for p in tune_files(Path(staging))}
        if not any(n.startswith(STATE) for n in files):
            return False
        if TUNER not in files and (self.storage / TUNER).exists() and problem(self.storage / TUNER) is None:
            files[TUNER] = self.storage / TUNER  # a new sweep's tuner.pkl is written to the storage only
        try:
            seen = {n: (p.stat().st_size, p.stat().st_mtime_ns) for n, p in files.items()}
            if seen == self._seen:
                return False
            start = time.monotonic()
            self._write(files, seen)
            self._took = time.monotonic() - start
        except OSError as exc:  # a full disk: said by the sweep; the previous generation stays
            self.failed = True
            if self.on_error:
                self.on_error(exc, str(self.dir))
            return False
        self._seen, self._last = seen, time.monotonic()
        return True

    def _write(self, files: dict[str, Path], seen: dict[str, tuple[int, int]]) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        cur = self.current_generation(self.dir)
        gen = (cur or 0) + 1
        new = self.dir / f"{gen:06d}"
        shutil.rmtree(new, ignore_errors=True)  # a generation a killed driver left half-made
        new.mkdir()
        before = _manifest(self.dir / f"{cur:06d}") if cur else {}
        for name, path in files.items():
            if before.get(name) == list(seen[name]):
                os.link(self.dir / f"{cur:06d}" / name, new / name)  # unchanged: the same bytes
            else:
                shutil.copyfile(path, new / name)
        (new / "manifest.json").write_text(json.dumps({"files": seen, "at": time.time()}))
        tmp = self.dir / "CURRENT.tmp"
        tmp.write_text(str(gen))
        os.replace(tmp, self.dir / "CURRENT")  # this generation is now the copy
        for old in self.dir.iterdir():
            if old.is_dir() and old.name.isdigit() and int(old.name) < gen - 1:
                shutil.rmtree(old, ignore_errors=True)

    @staticmethod
    def current_generation(folder: Path) -> int | None:
        """The generation a copy folder names as current (its CURRENT file), or None."""
        try:
            return int((folder / "CURRENT").read_text())
        except (OSError, ValueError):
            return None

    @classmethod
    def copy(cls, storage: Path) -> tuple[dict[str, Path], float] | None:
        """danlu's newest copy whose every file loads: (name -> path, when it was taken), else None."""
        folder = Path(storage) / "danlu" / KEEP_DIR
        cur = cls.current_generation(folder)
        for gen in (cur, (cur or 1) - 1):
            if not gen:
                continue
            files = {p.name: p for p in tune_files(folder / f"{gen:06d}")}
            if any(n.startswith(STATE) for n in files) and all(problem(p) is None for p in files.values()):
                at = (folder / f"{gen:06d}" / "manifest.json")
                try:
                    when = json.loads(at.read_text())["at"]
                except (OSError, ValueError, KeyError):
                    when = at.parent.stat().st_mtime
                return files, when
        return None


def _manifest(folder: Path) -> dict:
    try:
        return json.loads((folder / "manifest.json").read_text())["files"]
    except (OSError, ValueError, KeyError):
        return {}


def repair(storage: Path) -> Repair:
    """Make the storage's Tune files ones that load, before Tuner.restore. See the module's docstring."""
    storage = Path(storage)
    files = tune_files(storage)
    bad = {p.name: why for p in files if (why := problem(p))}
    states = [p.name for p in files if p.name.startswith(STATE)]
    out = Repair()
    aside = storage / "danlu" / ASIDE_DIR / time.strftime("%Y%m%d-%H%M%S")
    if not bad and states:
        return out  # as Tune left them: the usual case
    if not states:
        # no snapshot in the storage yet (a new sweep, or killed before Tune's first sync): danlu's copy, if any
        kept = Keeper.copy(storage)
        if kept is None:
            if bad:
                out.notes.append(f"Tune had saved no snapshot of this sweep yet and its other files could not be read "
                                 f"({'; '.join(f'{n}: {why}' for n, why in bad.items())}): the sweep's trials start over")
            return out
        return _adopt(storage, files, kept, aside, "Tune had not saved a snapshot of this sweep to its storage yet")
    damaged = "; ".join(f"{n}: {why}" for n, why in bad.items())
    if set(bad) == {TUNER}:  # only the Tuner's own file: it holds nothing of the trials
        kept = Keeper.copy(storage)
        _set_aside(storage / TUNER, aside)
        if kept is not None and TUNER in kept[0]:
            from orchestrator.storage.disk import copy_atomic

            copy_atomic(kept[0][TUNER], storage / TUNER)
            out.notes.append(f"{damaged}; replaced by danlu's copy (the damaged file is kept in {aside})")
        else:
            out.rebuild_tuner = True
            out.notes.append(f"{damaged}; written anew from this sweep's settings (the damaged file is kept in {aside})")
        out.restored = True
        return out
    kept = Keeper.copy(storage)
    if kept is not None:
        return _adopt(storage, files, kept, aside, damaged)
    # no copy of danlu's: the newest session whose files all load, the damaged sessions set aside
    sessions = sorted({s for p in files if (s := session(p.name))})
    bad_sessions = {s for n in bad if (s := session(n))}
    good = [s for s in sessions if s not in bad_sessions and (storage / f"{STATE}{s}.json").exists()]
    if not good:
        raise Unrestorable(
            f"none of Tune's snapshots of this sweep in {storage} can be read ({damaged or 'no experiment state'}), "
            f"and danlu holds no copy of them (it keeps one from the sweep's first snapshot on). Nothing was changed. "
            f"To start the sweep's trials over under the same MLflow parent run (the earlier trials' runs are kept), "
            f"move Tune's files ({', '.join(p.name for p in files)}) out of {storage}, e.g. into {aside}, and run "
            f"the same command again.")
    newest = good[-1]
    for p in files:
        s = session(p.name)
        if (s is not None and s > newest) or p.name in bad:
            _set_aside(p, aside)
    out.rebuild_tuner = TUNER in bad
    out.restored = True
    skipped = [s for s in sessions if s > newest]
    out.notes.append(f"Tune's snapshot files of this sweep could not all be read ({damaged}); danlu holds no copy, "
                     f"so the sweep is restored from the newest snapshot that loads, {STATE}{newest}.json"
                     + (f" (the later session(s) {', '.join(skipped)} are set aside)" if skipped else "")
                     + (f", with {TUNER} written anew from this sweep's settings" if out.rebuild_tuner else "")
                     + f"; the files set aside are kept in {aside}. Trials redo the work since that snapshot.")
    return out


def _adopt(storage: Path, files: list[Path], kept: tuple[dict[str, Path], float], aside: Path, why: str) -> Repair:
    """Restore from danlu's copy, whole: its files in place of Tune's, Tune's others set aside."""
    from orchestrator.storage.disk import copy_atomic

    copy, when = kept
    for p in files:
        if p.name not in copy:
            _set_aside(p, aside)
    for name, path in copy.items():
        target = storage / name
        if not target.exists() or target.read_bytes() != path.read_bytes():
            if target.exists():
                _set_aside(target, aside)
            copy_atomic(path, target)
    newest = max(n for n in copy if n.startswith(STATE))
    out = Repair(restored=True)
    out.notes.append(f"Tune's snapshot files of this sweep could not be used ({why}); the sweep is restored from "
                     f"danlu's copy of {time.strftime('%H:%M:%S', time.localtime(when))} ({len(copy)} files, {newest})"
                     + (f"; Tune's own files are kept in {aside}" if aside.exists() else ""))
    return out


def _set_aside(path: Path, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    os.replace(path, folder / path.name)
