"""The tracking journal: every operation on a sweep's runs, on disk before it is sent to the store.

An operation is an `Op`: its name (one of OPS, a RunStore method) and its fields by keyword. A line holds
{"op": name, "v": FORMAT, **fields}: the journal's format is this table, not the store's method signatures.
Lines of an earlier danlu (FORMAT 1: a positional list, ["metrics", trial_id, step, ...]) still read, their
positions named by OPS.

Three files in the sweep's storage:
- mlflow_journal.jsonl: one JSON operation a line, each with a CRC-32 of its text (`<json>\\t<crc>`), appended
  with one write(2) before it is queued, so a driver killed at any moment leaves every operation it accepted
  on disk; a write the disk cannot take whole (full, quota) is undone, never left as half a line;
- mlflow_journal.offset: how far MLflow has durably received it (`<offset> <crc>`, replaced atomically);
- mlflow_parked.jsonl: operations MLflow refused (a bad request, not an outage), with the reason, kept
  so that nothing is dropped: a resumed sweep sends them again, and the summary lists them.

Damage is found, kept and said, never dropped in silence: a last line cut short (by a kill, or by whoever
cut the file) is moved out of the journal into mlflow_journal.damaged so the next line starts clean; a whole
line whose checksum does not match is skipped. Each is a `Damage` naming the operation, trial and step that
could be read from it: the sweep says which were past what MLflow confirmed (so possibly never sent) and
checks at its end whether they came back (a restored trial reports its steps again). A damaged offset file
means every operation is replayed: each one is safe to repeat (orchestrator/tracking/mlflow_store.py).
"""

from __future__ import annotations

import json
import os
import re
import threading
import zlib
from dataclasses import dataclass
from pathlib import Path

FORMAT = 2
# each operation's fields, in the order an earlier danlu's positional lines held them
OPS: dict[str, tuple[str, ...]] = {
    "open": ("name", "config", "space", "root", "command", "extra_tags", "settings"),
    "close_sweep": ("metrics", "tags", "status", "trials", "report_pending"),
    "discard": (),
    "start": ("trial_id", "name", "params", "tags", "start_ms"),
    "meta": ("trial_id", "meta"),
    "metrics": ("trial_id", "step", "ts", "values"),
    "tags": ("trial_id", "tags"),
    "sweep_metrics": ("step", "ts", "values"),
    "end": ("trial_id", "status", "tags", "log_path", "error_text", "end_ms"),
    "batch": ("rid", "metrics", "params", "tags"),  # a run's buffer the store refused, sent again
}
TRIAL_OPS = ("start", "meta", "metrics", "tags", "end")


@dataclass(frozen=True)
class Op:
    """One operation on a sweep's runs: `name` (a key of OPS) and its fields by keyword."""

    name: str
    fields: dict

    def get(self, key: str, default=None):
        """A field's value, or `default`."""
        return self.fields.get(key, default)


def op(kind: str, /, **fields) -> Op:
    """An operation, its fields checked against OPS (a typo here would otherwise reach the journal)."""
    unknown = set(fields) - set(OPS[kind])
    if unknown:
        raise TypeError(f"operation {kind!r} has no field(s) {sorted(unknown)}")
    return Op(kind, fields)


# what a cut line still tells: today's {"op": .., "v": .., "trial_id": .., "step": ..} or an earlier list
_HEAD = re.compile(r'^\{"op":\s*"(\w+)",\s*"v":\s*\d+(?:,\s*"trial_id":\s*"([^"]*)"(?:,\s*"step":\s*(-?\d+))?)?'
                   r'|^\["(\w+)"(?:,\s*"([^"]*)"(?:,\s*(-?\d+))?)?')


@dataclass(frozen=True)
class Damage:
    """A journal line that cannot be trusted: where it was, what it was (as far as it can be read), why."""

    offset: int
    why: str  # "cut short" | "checksum mismatch" | "not JSON"
    kind: str | None = None  # the operation (metrics, start, end, ...), if readable
    trial: str | None = None  # its trial id, for a trial's operation
    step: int | None = None  # its step, for metrics

    @classmethod
    def of(cls, offset: int, raw: bytes, why: str) -> Damage:
        """A damaged line's Damage: its operation, trial and step where the line's head can still be read."""
        m = _HEAD.match(raw.decode("utf-8", "replace"))
        if not m:
            return cls(offset, why)
        kind, trial, step = m.group(1, 2, 3) if m.group(1) else m.group(4, 5, 6)
        trial_op = kind in TRIAL_OPS
        return cls(offset, why, kind, trial if trial_op else None,
                   int(step) if kind == "metrics" and step is not None else None)

    def describe(self, names: dict[str, str] | None = None) -> str:
        """In words; `names`: trial id -> the trial's label (t003), from the journal's start operations."""
        what = f"operation '{self.kind}'" if self.kind else "an operation whose kind cannot be read"
        if self.trial:
            label = (names or {}).get(self.trial)
            what += f" of trial {label} ({self.trial})" if label else f" of trial {self.trial}"
        if self.step is not None:
            what += f" at step {self.step}"
        return f"{what} ({self.why}, byte {self.offset})"


def encode(o: Op) -> bytes:
    """One journal line: the operation as JSON (its name, the format, then its fields), a tab, its CRC-32."""
    first = {k: o.fields[k] for k in ("trial_id", "step") if k in o.fields}  # what a cut line should still tell
    body = json.dumps({"op": o.name, "v": FORMAT, **first, **o.fields}, default=str)
    return f"{body}\t{zlib.crc32(body.encode()):08x}\n".encode()


def decode(line: bytes) -> Op | None:
    """The operation on a whole line, or None if the line is damaged. Lines of an earlier danlu have no checksum
    (the oldest) or hold a positional list (FORMAT 1)."""
    text = line.rstrip(b"\n")
    body, tab, crc = text.rpartition(b"\t")
    if tab:  # JSON text never holds a raw tab: the last one starts the checksum
        if len(crc) != 8 or crc.decode("ascii", "replace") != f"{zlib.crc32(body):08x}":
            return None
    else:
        body = text
    try:
        value = json.loads(body)
    except ValueError:
        return None
    if isinstance(value, dict) and value.get("op") in OPS:
        fields = {k: v for k, v in value.items() if k in OPS[value["op"]]}
        return Op(value["op"], fields)
    if isinstance(value, list) and value and value[0] in OPS and len(value) - 1 <= len(OPS[value[0]]):
        return Op(value[0], dict(zip(OPS[value[0]], value[1:], strict=False)))
    return None


class Journal:
    JOURNAL, OFFSET, PARKED = "mlflow_journal.jsonl", "mlflow_journal.offset", "mlflow_parked.jsonl"
    DAMAGED = "mlflow_journal.damaged"  # lines taken out of the journal (cut short), kept for inspection

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.path = self.dir / self.JOURNAL
        self.damage: list[Damage] = []  # damaged lines past the confirmed offset (possibly never sent)
        self.notes: list[str] = []  # what was found and done about it, for the terminal
        self.names: dict[str, str] = {}  # trial id -> its label (t003), as logged_steps() read them
        self._lock = threading.Lock()
        self._tail: Damage | None = None
        self._cut_tail()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._size = os.fstat(self._fd).st_size
        self._start = self._confirmed()

    # -- opening: a cut last line, a damaged offset ----------------------------------------------------
    def _cut_tail(self) -> None:
        """A last line without its newline was cut short: move it out, so the next line starts clean."""
        if not self.path.exists():
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            end = data.rfind(b"\n") + 1
            if end == len(data):
                return
            tail = data[end:]
            try:
                with open(self.dir / self.DAMAGED, "ab") as kept:
                    kept.write(tail + b"\n")
            except OSError:  # a full disk: the cut line is unusable anyway; it is still reported (`damage`)
                pass
            f.truncate(end)
        self._tail = Damage.of(end, tail, "cut short")

    def _confirmed(self) -> int:
        """The offset MLflow confirmed, checked: a damaged one means everything is replayed (and said)."""
        off = self.dir / self.OFFSET
        why = None
        try:
            text = off.read_text(errors="replace").split()
        except FileNotFoundError:
            text = ["0"]
        except OSError as exc:
            text, why = ["0"], f"unreadable ({exc.strerror or exc})"
        try:
            value = int(text[0])
            if len(text) > 2 or (len(text) == 2 and text[1] != f"{zlib.crc32(text[0].encode()):08x}"):
                why = "its checksum does not match"
        except (ValueError, IndexError):
            value, why = 0, "it holds no offset"
        if why is None and not 0 <= value <= self._size:
            why = f"it points past the journal's end ({value} > {self._size} bytes)"
        if why is None and value and not self._at_line_start(value):
            why = f"{value} is not the start of a line"
        if why:
            self.notes.append(f"the journal's offset file {off} is damaged ({why}); every operation of the journal "
                              "is sent again (each is safe to repeat)")
            value = 0
        tail = self._tail
        if tail is not None and tail.offset >= value:
            self.damage.append(tail)
        return value

    def report(self) -> list[str]:
        """What opening the journal found, in words (after logged_steps(), trials are named by their labels)."""
        out = list(self.notes)
        out += [f"a journal line past what MLflow confirmed is damaged, and skipped: {d.describe(self.names)}"
                for d in self.damage if d is not self._tail]
        tail = self._tail
        if tail is not None:
            out.append(f"the journal's last line was cut short: {tail.describe(self.names)}; kept in "
                       f"{self.dir / self.DAMAGED}" + ("" if tail in self.damage else " (MLflow had confirmed it)"))
        return out

    def _at_line_start(self, offset: int) -> bool:
        with open(self.path, "rb") as f:
            f.seek(offset - 1)
            return f.read(1) == b"\n"

    # -- writing -----------------------------------------------------------------------------------------
    def append(self, op: Op) -> int:
        """Write one operation; the journal's length after it (its end offset). Raises OSError when the disk
        cannot take it (full, quota, read-only): then nothing of it stays in the file."""
        data = encode(op)
        with self._lock:
            try:
                n = os.write(self._fd, data)  # one write(2): in the OS's hands, survives this process being killed
                if n != len(data):
                    raise OSError(28, f"No space left on device (wrote {n} of {len(data)} bytes)")
            except OSError:
                try:
                    os.ftruncate(self._fd, self._size)  # never half a line
                except OSError:
                    pass
                raise
            self._size += n
            return self._size

    # -- reading -----------------------------------------------------------------------------------------
    def lines(self, start: int = 0):
        """(offset, end offset, operation or None if damaged, raw line) of every whole line from `start`."""
        with open(self.path, "rb") as f:
            f.seek(start)
            pos = start
            for line in f:
                end = pos + len(line)
                if line.endswith(b"\n"):
                    yield pos, end, decode(line), line
                pos = end

    def unapplied(self) -> list[tuple[Op, int]]:
        """(operation, end offset) of every operation after the offset MLflow confirmed; damaged lines there are
        skipped and recorded in `damage`."""
        out = []
        for pos, end, op, raw in self.lines(self._start):
            if op is None:
                self.damage.append(Damage.of(pos, raw, "checksum mismatch" if b"\t" in raw else "not JSON"))
                continue
            out.append((op, end))
        return out

    def logged_steps(self) -> dict[str, int]:
        """trial id -> the highest step the journal holds of it (0 for a trial started with none): how far a
        restored trial may resume (orchestrator/storage/checkpoints.py)."""
        steps: dict[str, int] = {}
        for _, _, o, _ in self.lines(0):
            if o is None or not isinstance(o.get("trial_id"), str):
                continue
            tid, step = o.get("trial_id"), o.get("step")
            if o.name == "metrics" and isinstance(step, int):
                steps[tid] = max(step, steps.get(tid, step))
            elif o.name == "start":
                steps.setdefault(tid, 0)
                if isinstance(o.get("name"), str):
                    self.names[tid] = o.get("name").split(" ", 1)[0]
        return steps

    def applied(self) -> int:
        """The offset the store confirmed when the journal was opened."""
        return self._start

    def mark_applied(self, offset: int) -> None:
        """Record that MLflow holds everything up to `offset`. A disk that cannot take it only means more is
        replayed next time (every operation is safe to repeat)."""
        try:
            _atomic_write(self.dir / self.OFFSET, f"{offset} {zlib.crc32(str(offset).encode()):08x}")
        except OSError:
            pass

    # -- refused operations --------------------------------------------------------------------------
    def parked(self) -> list[tuple[Op, str]]:
        """The operations the store refused, with why (a line cut by a kill is skipped: it is still in the
        journal)."""
        path = self.dir / self.PARKED
        if not path.exists():
            return []
        out = []
        for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
            if line.strip():
                try:
                    entry = json.loads(line)
                    o = decode(json.dumps(entry["op"]).encode())
                    if o is not None:
                        out.append((o, str(entry["reason"])))
                except (ValueError, KeyError, TypeError):  # cut short by a kill while parking: still in the journal
                    continue
        return out

    def park(self, o: Op, reason: str) -> None:
        """Keep an operation the store refused, with why."""
        with open(self.dir / self.PARKED, "a", encoding="utf-8") as f:
            f.write(json.dumps({"op": _plain(o), "reason": reason}, default=str) + "\n")

    def set_parked(self, entries: list[tuple[Op, str]]) -> None:
        """Replace the parked list (after a retry: what MLflow still refuses)."""
        text = "".join(json.dumps({"op": _plain(o), "reason": r}, default=str) + "\n" for o, r in entries)
        if text or (self.dir / self.PARKED).exists():
            _atomic_write(self.dir / self.PARKED, text)

    def close(self) -> None:
        """Close the journal's file (appends after this raise)."""
        with self._lock:
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1


def _plain(o: Op) -> dict:
    return {"op": o.name, "v": FORMAT, **o.fields}


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # a crash leaves the old file or the new one, never half of one
