"""scripts/screenshots' work (see there): docs/runs.png, docs/sweep.png, docs/report.png, never edited by hand."""

from __future__ import annotations

import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = {"runs": "runs.png", "sweep": "sweep.png", "report": "report.png"}
SIZE = "2200,1100"  # wide enough for the run page's two columns (the description beside the details)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main(overrides: list[str]) -> int:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("scripts/screenshots: needs Debian's chromium (apt-get install chromium)", file=sys.stderr)
        return 2
    danlu = [sys.executable, "-m", "orchestrator", "--config-dir", str(ROOT / "conf")]
    with tempfile.TemporaryDirectory(prefix="danlu-shots-") as tmp:
        work = Path(tmp)
        print("scripts/screenshots: running the sweep (the demo's) ...", flush=True)
        sweep = subprocess.run([*danlu, "sweep", "sweep.name=demo", *overrides], cwd=work, text=True,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        print(sweep.stdout[-2500:])
        if sweep.returncode != 0:
            return sweep.returncode
        port, log = free_port(), work / "ui.log"
        ui = subprocess.Popen([*danlu, "ui", "--port", str(port)], cwd=work, stdout=open(log, "w"),
                              stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + 600
            while "  report:" not in log.read_text():
                if ui.poll() is not None or time.monotonic() > deadline:
                    print(log.read_text(), file=sys.stderr)
                    return 1
                time.sleep(0.5)
            links = dict(re.findall(r"^  (runs|sweep|report): +(http://\S+)", log.read_text(), re.M))
            DOCS.mkdir(exist_ok=True)
            for page, name in PAGES.items():
                profile = work / f"profile-{page}"  # fresh each time: no saved UI state
                subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                                f"--user-data-dir={profile}", "--virtual-time-budget=30000", "--hide-scrollbars",
                                f"--window-size={SIZE}", f"--screenshot={DOCS / name}", links[page]],
                               capture_output=True, timeout=300, check=True)
                print(f"scripts/screenshots: {DOCS / name}  <- {links[page]}", flush=True)
        finally:
            ui.send_signal(signal.SIGTERM)  # danlu ui ends MLflow's whole process group
            ui.wait(timeout=180)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
