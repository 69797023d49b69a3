"""The tracking journal: every MLflow operation of a sweep, on disk before it is sent.

Three files in the sweep's storage:
- mlflow_journal.jsonl: one JSON operation a line, appended (flushed to the OS) before it is queued, so
  a driver killed at any moment leaves every operation it accepted on disk;
- mlflow_journal.offset: how far MLflow has durably received it (written atomically by the writer);
- mlflow_parked.jsonl: operations MLflow refused (a bad request, not an outage), with the reason, kept
  so that nothing is dropped: a resumed sweep sends them again, and the summary lists them.

A line cut short by a kill was never acknowledged to anyone: it is cut off when the journal is opened
again, so that the next line does not run into it.
"""

from __future__ import annotations

import json
import os
from pathlib import Path


class Journal:
    JOURNAL, OFFSET, PARKED = "mlflow_journal.jsonl", "mlflow_journal.offset", "mlflow_parked.jsonl"

    def __init__(self, directory: Path):
        self.dir = Path(directory)
        self.path = self.dir / self.JOURNAL
        self._repair()
        self._file = open(self.path, "a", encoding="utf-8")

    def _repair(self) -> None:
        if not self.path.exists():
            return
        with open(self.path, "rb+") as f:
            data = f.read()
            end = data.rfind(b"\n") + 1
            if end < len(data):  # a partial last line: never applied, never acknowledged
                f.truncate(end)

    def append(self, op: tuple) -> int:
        """Write one operation; the journal's length after it (its end offset)."""
        self._file.write(json.dumps(op, default=str) + "\n")
        self._file.flush()  # in the OS's hands: survives this process being killed
        return self._file.tell()

    def unapplied(self) -> list[tuple[tuple, int]]:
        """(operation, end offset) of every operation after the offset MLflow confirmed."""
        start = self.applied()
        out = []
        with open(self.path, "rb") as f:
            f.seek(start)
            for line in f:
                start += len(line)
                if line.endswith(b"\n"):
                    out.append((tuple(json.loads(line)), start))
        return out

    def applied(self) -> int:
        off = self.dir / self.OFFSET
        try:
            return int(off.read_text())
        except (FileNotFoundError, ValueError):  # none yet, or (never, as it is replaced atomically) garbled
            return 0

    def mark_applied(self, offset: int) -> None:
        _atomic_write(self.dir / self.OFFSET, str(offset))

    # -- refused operations --------------------------------------------------------------------------
    def parked(self) -> list[tuple[tuple, str]]:
        path = self.dir / self.PARKED
        if not path.exists():
            return []
        out = []
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                try:
                    entry = json.loads(line)
                except ValueError:  # a line cut short by a kill while parking: the op is still in the journal
                    continue
                out.append((tuple(entry["op"]), entry["reason"]))
        return out

    def park(self, op: tuple, reason: str) -> None:
        with open(self.dir / self.PARKED, "a", encoding="utf-8") as f:
            f.write(json.dumps({"op": op, "reason": reason}, default=str) + "\n")

    def set_parked(self, entries: list[tuple[tuple, str]]) -> None:
        """Replace the parked list (after a retry: what MLflow still refuses)."""
        text = "".join(json.dumps({"op": op, "reason": r}, default=str) + "\n" for op, r in entries)
        if text or (self.dir / self.PARKED).exists():
            _atomic_write(self.dir / self.PARKED, text)

    def close(self) -> None:
        self._file.close()


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)  # a crash leaves the old file or the new one, never half of one
