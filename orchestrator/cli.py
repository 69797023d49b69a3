"""danlu: Hydra-composed sweeps on Ray Tune with ASHA, tracked in MLflow.

    danlu sweep                                             the default sweep (conf/sweep/default.yaml)
    danlu sweep experiment=digits_lr                        a ready-made sweep from conf/experiment/
    danlu sweep lr='tag(log, interval(1e-4, 1e-1))' batch_size=32,64 sweep.num_samples=8
    danlu resume NAME                                       continue an interrupted sweep
    danlu run lr=0.1 epochs=5                               one trial, in this process, no Ray
    danlu ui                                                the MLflow UI on the configured store

Overrides are Hydra overrides. Exit codes: 0 ok, 1 the sweep failed, 2 bad input.
This module imports nothing heavy: Ray, torch and MLflow load only when a command needs them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from orchestrator import __version__
from orchestrator.errors import BadInput

OVERRIDES_HELP = "Hydra overrides: key=value, group=option, and for sweeps key=<sweep expression>"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="danlu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"danlu {__version__}")
    parser.add_argument("--config-dir", help="directory holding config.yaml (default: ./conf)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("sweep", help="run a sweep on Ray Tune (ASHA), logged to MLflow")
    p.add_argument("--verbose", action="store_true", help="show Ray's own logs and per-iteration tables")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)

    p = sub.add_parser("resume", help="continue a sweep that was interrupted (same runs, same trials)")
    p.add_argument("name", help="the sweep's name (its directory under output_dir)")
    p.add_argument("overrides", nargs="*", help="output_dir=... if the sweep was not stored under ./outputs")

    p = sub.add_parser("run", help="run one trial in this process (no Ray, no MLflow), for debugging")
    p.add_argument("--cfg", action="store_true", help="print the composed config and exit")
    p.add_argument("overrides", nargs="*", help="Hydra overrides (plain values only)")

    p = sub.add_parser("ui", help="start the MLflow UI on the configured tracking store, on 127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. tracking.uri=sqlite:///other.db")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    try:
        from orchestrator.compose import find_config_dir

        config_dir = find_config_dir(args.config_dir)
        if args.command == "sweep":
            from orchestrator.sweep import run_sweep

            return run_sweep(args.overrides, config_dir, verbose=args.verbose, command=["danlu", *sys.argv[1:]])
        if args.command == "resume":
            return _resume(args, config_dir)
        if args.command == "run":
            return _run(args, config_dir)
        if args.command == "ui":
            return _ui(args, config_dir)
    except BadInput as exc:
        print(f"danlu: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ndanlu: interrupted", file=sys.stderr)
        return 130
    return 2


def _resume(args, config_dir: Path) -> int:
    from orchestrator.sweep import run_sweep, saved_overrides

    where = [o for o in args.overrides if o.startswith("output_dir=")]
    if len(where) != len(args.overrides):
        raise BadInput("danlu resume takes only output_dir=...: a sweep resumes with the settings it started with.")
    output_dir = where[-1].split("=", 1)[1] if where else "outputs"
    saved = saved_overrides(Path(output_dir, args.name))
    if saved is None:
        raise BadInput(f"danlu resume {args.name}: no sweep of that name under {output_dir}/ "
                       f"(looked for {Path(output_dir, args.name, 'danlu.json')}).")
    kept = [o for o in saved if not o.startswith(("sweep.name=", "output_dir="))]
    return run_sweep([*kept, f"sweep.name={args.name}", *where], config_dir, verbose=False,
                     command=["danlu", *sys.argv[1:]])


def _run(args, config_dir: Path) -> int:
    from orchestrator.compose import compose, hydra_context, split_overrides
    from orchestrator.trial import run_local

    cl = split_overrides(args.overrides)
    if cl.sweep:
        raise BadInput(f"danlu run takes plain values; {', '.join(cl.sweep)} is a sweep. Use danlu sweep for that.")
    with hydra_context(config_dir):
        cfg = compose(cl.fixed)
    if args.cfg:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(cfg))
        return 0
    return run_local(cfg, config_dir)


def _ui(args, config_dir: Path) -> int:
    import os

    from orchestrator.compose import compose, hydra_context, split_overrides
    from orchestrator.tracking import resolve_uri

    with hydra_context(config_dir):
        cfg = compose(split_overrides(args.overrides).fixed)
    uri = resolve_uri(str(cfg.tracking.uri))
    if uri.startswith(("http://", "https://")):
        print(f"danlu: the tracking store is a server: open {uri} in a browser.")
        return 0
    print(f"danlu: MLflow UI for {uri} at http://127.0.0.1:{args.port} (Ctrl-C stops it)", flush=True)
    cmd = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri, "--host", "127.0.0.1",
           "--port", str(args.port)]
    os.execv(sys.executable, cmd)  # the UI becomes this process: a signal to danlu reaches it


if __name__ == "__main__":
    raise SystemExit(main())
