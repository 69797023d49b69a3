"""danlu's record in each trial checkpoint, and which checkpoint a restored trial may use.

Each checkpoint a trial saves through `ctx.report(..., checkpoint=state)` carries `danlu-checkpoint.json`: the
trial's iteration (Tune's count of reports), the job's step, and every file's size and CRC-32. With it a
restore can tell
- a checkpoint cut short or damaged (a kill while it was copied, a full disk, a bad block) from a whole one;
- the newest whole checkpoint of a trial, whatever its directory name says (a restored trial writes its next
  checkpoints under names an earlier driver had used).

And which steps MLflow will hold: before Tune restores a sweep, the driver writes, from its journal, the
highest step it holds of each trial (`danlu/restore_limits.json`). A restored trial never resumes from a
checkpoint past that step: its results past it never reached the journal (the driver died between the
worker's upload and the driver's handling of the result), so resuming there would skip them for good.
It resumes from the newest whole checkpoint at or before it instead, and reports those steps again.
"""

from __future__ import annotations

import json
import os
import zlib

MARKER = "danlu-checkpoint.json"
LIMITS = "restore_limits.json"  # in the sweep's danlu/ folder
_CKPT_PREFIX = "checkpoint_"


def write_marker(directory: str, iteration: int, step) -> None:
    """Record, in a checkpoint folder about to be handed to Tune, what a restore needs to check it."""
    files, crcs = {}, {}
    for name in os.listdir(directory):
        path = os.path.join(directory, name)
        if name == MARKER or not os.path.isfile(path):
            continue
        files[name] = os.path.getsize(path)
        crc = 0
        with open(path, "rb") as f:
            while chunk := f.read(1 << 20):
                crc = zlib.crc32(chunk, crc)
        crcs[name] = crc
    with open(os.path.join(directory, MARKER), "w") as f:
        json.dump({"iteration": iteration, "step": step, "files": files, "crc32": crcs}, f)


def inspect(fs, path: str) -> tuple[dict | None, str | None]:
    """(danlu's record, None) for a whole checkpoint; (record or None, why) when it cannot be used as it is.
    A folder without danlu's record is reported as such (record None, why "no danlu record")."""
    import pyarrow.fs

    try:
        with fs.open_input_stream(f"{path}/{MARKER}") as f:
            marker = json.loads(f.read())
        int(marker["iteration"])
        sizes = dict(marker["files"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        if fs.get_file_info(path).type == pyarrow.fs.FileType.NotFound:
            return None, "deleted"
        if isinstance(exc, FileNotFoundError):
            return None, "no danlu record"
        return None, f"its record {MARKER} is damaged ({type(exc).__name__})"
    crcs = marker.get("crc32") or {}
    for name, size in sizes.items():
        info = fs.get_file_info(f"{path}/{name}")
        if info.type == pyarrow.fs.FileType.NotFound:
            return marker, f"{name} is missing"
        if info.size != size:
            return marker, f"{name} has {info.size} of its {size} bytes"
        if name in crcs:
            crc = 0
            with fs.open_input_stream(f"{path}/{name}") as f:
                while chunk := f.read(1 << 20):
                    crc = zlib.crc32(chunk, crc)
            if crc != crcs[name]:
                return marker, f"{name} does not match its checksum"
    return marker, None


def newest(fs, trial_dir: str, max_step=None) -> tuple[str, int] | None:
    """(path, iteration) of the trial's whole checkpoint with the highest recorded iteration, among those whose
    step is at most `max_step` (all, if None); None if there is none."""
    import pyarrow.fs

    best = None
    for info in fs.get_file_info(pyarrow.fs.FileSelector(trial_dir, allow_not_found=True)):
        if info.type != pyarrow.fs.FileType.Directory or not info.base_name.startswith(_CKPT_PREFIX):
            continue
        try:
            marker, why = inspect(fs, info.path)
        except OSError:
            continue
        if marker is None or why is not None:  # not danlu's, or not whole
            continue
        if max_step is not None and not _at_most(marker.get("step"), max_step):
            continue
        iteration = int(marker["iteration"])
        if best is None or iteration > best[1]:
            best = (info.path, iteration)
    return best


def _at_most(step, limit) -> bool:
    """A checkpoint's step is within the limit; one recorded without a step (an older danlu) is taken as past it."""
    try:
        return float(step) <= float(limit)
    except (TypeError, ValueError):
        return False


def read_limits(fs, experiment_dir: str) -> dict[str, float] | None:
    """The restore limits (trial id -> the highest step a restored trial may resume from) in a sweep's storage,
    read through Tune's filesystem; None where there are none or they cannot be read."""
    try:
        with fs.open_input_stream(f"{experiment_dir}/danlu/{LIMITS}") as f:
            return dict(json.loads(f.read())["steps"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def write_limits(state_dir, steps: dict) -> None:
    """Replace the restore limits (trial id -> highest step) in danlu's folder of the sweep, atomically."""
    tmp = os.path.join(str(state_dir), LIMITS + ".tmp")
    with open(tmp, "w") as f:
        json.dump({"steps": steps}, f)
    os.replace(tmp, os.path.join(str(state_dir), LIMITS))


def choose(fs, path: str, trial_id: str) -> tuple[str | None, int, str | None]:
    """The checkpoint a restored trial resumes from, given the one Tune's snapshot names (`path`):
    (path, its iteration, None) to use it as it is; (other path, its iteration, why) to fall back to another
    whole checkpoint; (None, 0, why) to start over. Tune's own checkpoint of a driver started after it
    (a retry after a node died) is always within the journal: only the sweep's restore is limited."""
    trial_dir, gone = path.rsplit("/", 1)
    limits = read_limits(fs, trial_dir.rsplit("/", 1)[0])
    limit = None if limits is None else limits.get(trial_id)
    marker, why = inspect(fs, path)
    if why == "no danlu record":  # a checkpoint danlu did not write (an older danlu): as Tune has it
        return path, -1, None
    if why is None and marker is not None and limit is not None and not _at_most(marker.get("step"), limit):
        why = f"its step {marker.get('step')} never reached the journal, which holds up to step {limit:g}"
    if why is None:
        return path, -1, None
    if why == "deleted":
        why = "named by Ray's last snapshot, was deleted"
    found = newest(fs, trial_dir, limit)
    if found is None:
        return None, 0, f"its start ({gone}: {why}; no other whole checkpoint" + \
            (f" at or before step {limit:g}" if limit is not None else "") + ")"
    return found[0], found[1], f"{found[0].rsplit('/', 1)[-1]} at iteration {found[1]} ({gone}: {why})"
