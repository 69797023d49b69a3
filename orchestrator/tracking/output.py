"""A trial's output as the tracking store gets it: whole up to tracking.max_output_mb, else its head and tail with
the cut said. The whole output stays in the sweep's storage (<output_dir>/<name>/logs/<trial_id>.log): stored once
in full there, and capped in MLflow (a job printing 50 MB a trial wrote it twice before, without a bound)."""

from __future__ import annotations

import os

CUT = "\n[danlu: {cut:,} bytes of this trial's output cut here (tracking.max_output_mb={mb:g}); the whole output is {path}]\n"


def for_store(path: str, max_mb: float | None) -> str:
    """The file to send as the run's output.log: `path` itself when it fits (or no cap), else a capped copy beside
    it (<trial_id>.log.capped: the first and last halves of the cap)."""
    if not max_mb or not os.path.exists(path):
        return path
    cap = int(max_mb * 2**20)
    size = os.path.getsize(path)
    if size <= cap:
        return path
    half = cap // 2
    capped = path + ".capped"
    with open(path, "rb") as src, open(capped + ".tmp", "wb") as dst:
        dst.write(src.read(half))
        dst.write(CUT.format(cut=size - 2 * half, mb=max_mb, path=path).encode())
        src.seek(size - half)
        dst.write(src.read(half))
    os.replace(capped + ".tmp", capped)
    return capped
