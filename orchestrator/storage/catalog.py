"""The sweeps stored on this machine (under output_dir): `danlu list` without a cluster, and the names `danlu resume`
offers when it is given one that does not exist.

A sweep's state comes from its own files, without Ray or MLflow: running (a driver holds its lease:
orchestrator/storage/lock.py), finished (it ended whole: danlu/finished.json), or interrupted (neither: its driver was
stopped or died; the same command, or `danlu resume NAME`, continues it). Trials done of total and the best so far
come from danlu/progress.json, which the live progress line keeps (orchestrator/run/progress.py).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Entry:
    name: str
    state: str  # running | finished | interrupted
    done: int | None
    total: int | None
    best: str | None
    started: str
    holder: dict | None  # who runs it (host, pid, since), when running


def _json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def sweeps(output_dir: Path) -> list[Entry]:
    """Every sweep stored under output_dir (a folder with danlu/sweep.json), by name, each with its state as its
    files say (running: a live lock; finished; interrupted) and its progress."""
    from orchestrator.storage.lock import holder
    from orchestrator.storage.sweep_files import FINISHED, PROGRESS, SAVED, SAVED_COPY, STATE_DIR

    out = []
    root = Path(output_dir)
    for storage in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
        state = storage / STATE_DIR
        ident = next((f for f in (state / SAVED, state / SAVED_COPY) if f.exists()), None)
        if ident is None:
            continue
        saved = _json(ident) or {}
        progress = _json(state / PROGRESS) or {}
        held = holder(state)
        finished = _json(state / FINISHED)
        kind = "running" if held else ("finished" if isinstance(finished, dict) else "interrupted")
        started = saved.get("started") or time.strftime("%Y-%m-%d %H:%M", time.localtime(ident.stat().st_mtime))
        out.append(Entry(storage.name, kind, progress.get("done"), progress.get("total"), progress.get("best"),
                         started, held))
    return out


def names(output_dir: Path) -> list[str]:
    """The names of the sweeps stored under output_dir (for a message that lists them)."""
    return [e.name for e in sweeps(output_dir)]


def show(output_dir: Path, out) -> int:
    """`danlu list`: one line per sweep stored under output_dir (exit 0; a folder with none says so)."""
    entries = sweeps(output_dir)
    if not entries:
        print(f"danlu: no sweeps under {output_dir}/ (run one with danlu sweep; a cluster's: danlu list --address "
              "http://HEAD:8265)", file=out)
        return 0
    head = ("SWEEP", "STATE", "TRIALS", "BEST SO FAR", "STARTED")
    rows = [(e.name, e.state + (f" ({e.holder.get('host')}, pid {e.holder.get('pid')})" if e.holder else ""),
             f"{e.done if e.done is not None else '?'}/{e.total if e.total is not None else '?'}", e.best or "-",
             str(e.started)[:16].replace("T", " ")) for e in entries]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip(), file=out)
    interrupted = [e.name for e in entries if e.state == "interrupted"]
    for name in interrupted:
        extra = "" if Path(output_dir) == Path("outputs") else f" output_dir={output_dir}"
        print(f"danlu: {name} was interrupted; continue it with: danlu resume {name}{extra}", file=out)
    return 0
