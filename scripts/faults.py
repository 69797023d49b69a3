"""The storage-fault loop: a real sweep, a fault in its storage at a seeded moment, the same command to the end, and
the MLflow store checked. The kill loop (scripts/chaos.py) kills drivers; this one damages what they leave.

    .venv/bin/python scripts/faults.py                              # 24 iterations: 3 of each fault kind
    .venv/bin/python scripts/faults.py --kinds cut-state,disk-full --iterations 4
    .venv/bin/python scripts/faults.py --seed 7 --iterations 1 --keep   # replay one iteration, keep its files
    .venv/bin/python scripts/faults.py --extend --kinds cut-state,cut-journal   # the faults in `danlu extend`

The sweep is the kill loop's (10 trials of the sleeping job under ASHA, a checkpoint every report, Tune keeping 2).
Iteration i uses seed S+i and fault kind number i (round robin over --kinds). The kinds:
- cut-state, cut-tuner, cut-searcher, cut-checkpoint, cut-journal, cut-offset: the driver is SIGKILLed in a seeded
  phase (scripts/chaos.py: start-up, trials running (half of them), a rung decision, the end), then Tune's newest
  experiment_state-*.json,
  tuner.pkl, the searcher's newest state, a trial's newest checkpoint (one of its files), the journal's last line or
  its offset file is cut at a seeded byte (or left empty). In a third of them danlu's own copy of Tune's files is
  removed as well, so that the restore must do without it;
- disk-full: output_dir and the sqlite store on a 40 MB tmpfs, filled by a ballast file at a seeded moment (leaving
  nothing, or up to 1.5 MB: below storage.min_free_mb=2), then freed. Needs root (mount); skipped with a reason otherwise;
- second-driver: the same command started again in the same folder while the first runs.
Then the same command runs to the end. Where danlu stops and says what to do (a sweep none of whose snapshots can
be read: "move Tune's files ... and run the same command again"), the loop does it, once.

With --extend (the cut-* kinds), the sweep of half the configurations runs to its end first; the kill and the damage
land in its extension (scripts/chaos.py --extend): Tune's files cut are the extension's own (extensions/1/), the
journal the sweep's.

Checks, from the MLflow store and the output:
- no finished trial's run is ever deleted: every run FINISHED before the fault still exists, not deleted;
- the fault run: disk-full exits 1 saying "disk full at", the resume command, and no Traceback; a second driver
  exits 2 saying the sweep "is running";
- every loss is said, with a non-zero exit: a final run that does not exit 0 says why ("lost:", "left out of the
  report", or its error); no run is left RUNNING either way;
- a final run that exits 0 leaves a store meeting every invariant of the kill loop (chaos.check: one parent with its
  report, one run per trial, every step once, none RUNNING, nothing printed as refused or as a Traceback).
Exit 0 when no iteration violated anything, 1 otherwise. Each iteration's line says what was done and how it ended.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import chaos  # noqa: E402  (the kill loop: its sweep, its driver runner, its checks)

KINDS = ("cut-state", "cut-tuner", "cut-searcher", "cut-checkpoint", "cut-journal", "cut-offset", "disk-full",
         "second-driver")
KILL_PHASES = ("startup", "trials", "trials", "trials", "rung", "end")  # mostly while trials run
STORAGE = Path("outputs") / "chaos"


def finished_runs(cwd: Path) -> set[str]:
    """Run ids of the sweep's FINISHED runs (parent included), as the store holds them now."""
    if not (cwd / "mlflow.db").exists():
        return set()
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("danlu")
    if exp is None:
        return set()
    return {r.info.run_id for r in client.search_runs([exp.experiment_id], max_results=5000)
            if r.info.status == "FINISHED"}


def deleted_or_missing(cwd: Path, run_ids: set[str]) -> list[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    gone = []
    for rid in run_ids:
        try:
            run = client.get_run(rid)
        except Exception:
            gone.append(f"{rid} (missing)")
            continue
        if run.info.lifecycle_stage != "active":
            gone.append(f"{rid} ({run.info.lifecycle_stage})")
    return gone


def running_runs(cwd: Path) -> list[str]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{cwd / 'mlflow.db'}")
    exp = client.get_experiment_by_name("danlu")
    runs = client.search_runs([exp.experiment_id], max_results=5000) if exp else []
    return [r.info.run_name for r in runs if r.info.status == "RUNNING"]


def cut(rng: random.Random, path: Path, lines: bool = False) -> str:
    """Cut a file at a seeded byte (or to nothing); with `lines`, within its last line. Says what was done."""
    data = path.read_bytes()
    if lines:
        start = data.rstrip(b"\n").rfind(b"\n") + 1
        if start > len(data) - 2:
            return f"{path.name} has no line to cut yet"
        at = rng.randint(start, len(data) - 2)
    else:
        at = 0 if rng.random() < 0.25 or len(data) < 2 else rng.randint(1, len(data) - 1)
    path.write_bytes(data[:at])
    return f"{path.name} cut to {at} of {len(data)} bytes"


def tune_files(cwd: Path) -> Path:
    """Where Tune's experiment of the running part is: the sweep's folder, or its extension's (--extend)."""
    return cwd / STORAGE / "extensions" / "1" if chaos.EXTEND[0] else cwd / STORAGE


def damage(kind: str, rng: random.Random, cwd: Path) -> str:
    storage = cwd / STORAGE
    if kind == "cut-journal":
        return cut(rng, storage / "danlu" / "mlflow_journal.jsonl", lines=True)
    if kind == "cut-offset":
        path = storage / "danlu" / "mlflow_journal.offset"
        return cut(rng, path) if path.exists() else "no offset file yet"
    storage = tune_files(cwd)
    if kind == "cut-checkpoint":
        ckpts = sorted(storage.glob("t*/checkpoint_*"), key=lambda p: p.stat().st_mtime)
        if not ckpts:
            return "no checkpoint yet"
        target = ckpts[-1 - rng.randint(0, min(3, len(ckpts) - 1))]
        files = sorted(p for p in target.iterdir() if p.is_file())
        return f"{target.parent.name}/{target.name}/" + cut(rng, rng.choice(files))
    pattern = {"cut-state": "experiment_state-*.json", "cut-tuner": "tuner.pkl",
               "cut-searcher": "basic-variant-state-*.json"}[kind]
    found = sorted(storage.glob(pattern))
    if not found:
        return f"no {pattern} yet"
    said = cut(rng, found[-1])
    copy = tune_files(cwd) / "danlu" / "tune"  # danlu's copy of Tune's files (orchestrator/storage/snapshots.py)
    if rng.random() < 1 / 3 and copy.exists():
        shutil.rmtree(copy)
        said += ", and danlu's copy removed"
    return said


class Tmpfs:
    """A small tmpfs for the disk-full fault, unmounted whatever happens."""

    def __init__(self, size_mb: int = 40):
        self.dir = Path(tempfile.mkdtemp(prefix="danlu-full-"))
        self.size_mb = size_mb

    def __enter__(self) -> Path:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={self.size_mb}m", "tmpfs", str(self.dir)], check=True,
                       capture_output=True, text=True)
        return self.dir

    def __exit__(self, *exc) -> None:
        subprocess.run(["umount", "-l", str(self.dir)], capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


def can_mount() -> str | None:
    """Why the disk-full fault cannot run here, or None."""
    if os.geteuid() != 0:
        return "mounting a tmpfs needs root"
    if shutil.which("mount") is None:
        return "no mount command"
    return None


def run_to_end(cwd: Path, log: Path, args: list[str] | None = None) -> tuple[int, str]:
    """The same command to the end; once more if danlu asks for Tune's files to be moved aside (and it is done)."""
    for attempt in range(2):
        start = log.stat().st_size if log.exists() else 0
        code = chaos.run_once(cwd, log, None, args=args)
        out = log.read_text(errors="replace")[start:]
        if code == 1 and "move Tune's files" in out and attempt == 0:
            aside = cwd / STORAGE / "danlu" / "set-aside" / "by-hand"
            aside.mkdir(parents=True, exist_ok=True)
            for p in tune_files(cwd).iterdir():
                if p.is_file() and (p.name == "tuner.pkl" or p.suffix in (".json", ".pkl")):
                    os.replace(p, aside / p.name)
            continue
        if chaos.EXTEND[0] and code == 2 and "nothing to extend" in out:  # it had ended: its summary, as resume says
            start = log.stat().st_size
            code = chaos.run_once(cwd, log, None, args=chaos.extend_command("resume"))
            out = log.read_text(errors="replace")[start:]
        return code, out
    return code, out


def iteration(seed: int, kind: str, keep: bool) -> tuple[str, list[str]]:
    """One fault; (what happened, violations)."""
    rng = random.Random(seed)
    if kind == "disk-full" and can_mount():
        return f"skipped ({can_mount()})", []
    tmpfs = Tmpfs() if kind == "disk-full" else None
    cwd = tmpfs.__enter__() if tmpfs else Path(tempfile.mkdtemp(prefix=f"danlu-faults-{seed}-"))
    log = cwd / "driver.log"
    problems: list[str] = []
    try:
        if kind == "disk-full":
            what = disk_full(rng, cwd, log, problems)
        elif kind == "second-driver":
            what = second_driver(rng, cwd, log, problems)
        else:
            if chaos.EXTEND[0]:  # the sweep to extend, to its end
                code = chaos.run_once(cwd, log, None, args=chaos.base_command())
                if code != 0:
                    return "the sweep before the extension failed", [f"it exited {code}"]
            when = chaos.kill_moment(rng, rng.choice(KILL_PHASES), 25.0)
            code = chaos.run_once(cwd, log, when)
            if code is not None:
                return f"the sweep ended (exit {code}) before its kill at {when.describe}: nothing to damage", []
            before = finished_runs(cwd)
            what = f"killed at {when.describe}, then {damage(kind, rng, cwd)}"
            code, out = run_to_end(cwd, log)
            problems += judge(cwd, code, out, before)
        return what, problems
    except Exception as exc:  # the loop itself failed: a violation to look at, not a crash of the loop
        return "the iteration failed", [f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"]
    finally:
        if problems or keep:
            kept = Path(tempfile.mkdtemp(prefix=f"danlu-faults-kept-{seed}-"))
            shutil.copytree(cwd, kept, dirs_exist_ok=True, ignore=shutil.ignore_patterns("ballast"))
            problems and problems.append(f"kept: {kept} (driver.log, mlflow.db, outputs/)")
        if tmpfs:
            tmpfs.__exit__()
        else:
            shutil.rmtree(cwd, ignore_errors=True)


def judge(cwd: Path, code: int, out: str, before: set[str]) -> list[str]:
    problems = [f"finished run deleted: {r}" for r in deleted_or_missing(cwd, before)]
    problems += [f"run left RUNNING: {r}" for r in running_runs(cwd)]
    if code == 0:
        problems += chaos.check(cwd, code, out)
    elif not any(w in out for w in ("danlu: lost:", "left out of the report", "danlu: error:")):
        problems.append(f"final run exited {code} without saying what was lost")
    elif "Traceback" in out:
        problems.append("final run printed a Traceback")
    return problems


def disk_full(rng: random.Random, cwd: Path, log: Path, problems: list[str]) -> str:
    args = chaos.command(["storage.min_free_mb=2"])
    ends, leave = rng.randint(1, 6), rng.choice([0, 0, rng.randint(0, 3 * 2**19)])  # bytes: below min_free_mb
    state = {}

    def fill(cwd_, text, elapsed):  # never kills: fills the disk once `ends` trials have ended
        if "filled" not in state and chaos.journal_ends(cwd_) >= ends:
            state["filled"] = finished_runs(cwd_)
            free = shutil.disk_usage(cwd_).free
            try:
                with open(cwd_ / "ballast", "wb") as f:
                    f.write(b"\0" * max(0, free - leave))
            except OSError:  # full before the last byte: as good
                pass
        return False

    fill.describe = f"never: the disk is filled after {ends} trial ends"
    code = chaos.run_once(cwd, log, fill, args=args)
    out = log.read_text(errors="replace")
    what = f"disk filled after {ends} trial ends, leaving {leave / 2**20:.2f} MB"
    if "filled" not in state:
        return what + f": the sweep ended first (exit {code})", []
    if code == 0:  # what was left took every write the sweep still made (or it ended first): it must be whole
        problems += judge(cwd, code, out, state["filled"])
        return what + ": every write still fitted, the sweep finished (exit 0)"
    if code != 1 or "disk full at" not in out or "resume with: " not in out or "Traceback" in out:
        problems.append(f"the full disk was not said as such (exit {code}): "
                        f"{' | '.join(ln for ln in out.splitlines() if 'danlu' in ln)[-600:]}")
    (cwd / "ballast").unlink()
    code, out = run_to_end(cwd, log, args)  # the same command: its storage.min_free_mb fits this small disk
    problems += judge(cwd, code, out, state["filled"])
    return what + f"; the resumed sweep exited {code}"


def second_driver(rng: random.Random, cwd: Path, log: Path, problems: list[str]) -> str:
    ends = rng.randint(0, 6)
    second = cwd / "second.log"
    state = {}

    def start_second(cwd_, text, elapsed):  # never kills: starts a second driver once `ends` trials have ended
        if "code" not in state and "danlu: MLflow" in text and chaos.journal_ends(cwd_) >= ends:
            state["code"] = chaos.run_once(cwd_, second, None, timeout=300)
        return False

    start_second.describe = f"never: a second driver starts after {ends} trial ends"

    code = chaos.run_once(cwd, log, start_second)
    out = log.read_text(errors="replace")
    if "code" not in state:
        return f"the sweep ended before a second driver was started (exit {code})", judge(cwd, code, out, set())
    said = second.read_text(errors="replace")
    if state["code"] != 2 or "is running" not in said:
        problems.append(f"the second driver exited {state['code']}: {said[-400:]}")
    problems += judge(cwd, code, out, set())
    return f"a second driver after {ends} trial ends exited {state['code']}; the first exited {code}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=24)
    ap.add_argument("--seed", type=int, default=0, help="iteration i uses seed+i")
    ap.add_argument("--kinds", default=",".join(KINDS), help=f"fault kinds, in turn ({', '.join(KINDS)})")
    ap.add_argument("--keep", action="store_true", help="keep every iteration's files, not only failing ones")
    ap.add_argument("--extend", action="store_true", help="the faults land in `danlu extend` of an ended sweep "
                    "(the cut-* kinds)")
    args = ap.parse_args(argv)
    kinds = args.kinds.split(",")
    if not set(kinds) <= set(KINDS):
        ap.error(f"--kinds: each of {', '.join(KINDS)}")
    if args.extend and not all(k.startswith("cut-") for k in kinds):
        ap.error("--extend: the cut-* kinds only (a full disk and a second driver are not run in an extension yet)")
    chaos.EXTEND[0] = args.extend
    t0, failed, tally = time.monotonic(), [], {}
    for i in range(args.iterations):
        seed, kind = args.seed + i, kinds[i % len(kinds)]
        what, problems = iteration(seed, kind, args.keep)
        tally.setdefault(kind, [0, 0])[bool(problems)] += 1
        print(f"seed {seed} {kind}: {what}: {'VIOLATIONS' if problems else 'OK'}", flush=True)
        for p in problems:
            print(f"    {p}", flush=True)
        if problems:
            failed.append(seed)
    for kind, (ok, bad) in tally.items():
        print(f"faults: {kind}: {ok + bad} iterations, {bad} with violations", flush=True)
    print(f"faults: {args.iterations} iterations: {len(failed)} with violations"
          f"{' (seeds ' + ', '.join(map(str, failed)) + ')' if failed else ''}; {time.monotonic() - t0:.0f} s")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
