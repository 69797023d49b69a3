"""Where a result came from: the user's project's git commit, and whether its tree had changes not committed. A
sweep records it on its parent run; `danlu rerun` compares it with the tree it runs in."""

from __future__ import annotations

import subprocess
from pathlib import Path


def git_state(root: Path) -> tuple[str, str]:
    """(commit, dirty) of the project, or ("unknown", "unknown") outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10)
        status = subprocess.run(["git", "status", "--porcelain"], cwd=root, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return "unknown", "unknown"
    if commit.returncode:
        return "unknown", "unknown"
    return commit.stdout.strip(), str(bool(status.stdout.strip())).lower()
