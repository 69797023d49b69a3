"""danlu: Hydra-composed sweeps on Ray Tune with ASHA, tracked in MLflow.

    danlu init [DIR] [--job NAME] [--from module:function]  a project of your own: conf/ and a job to fill in
    danlu plan [--probe]                                    what the default sweep would run and cost; launches nothing
    danlu preflight                                         overfit a tiny batch, NaN at the lr's bounds, the stores
    danlu sweep                                             the default sweep (conf/sweep/default.yaml)
    danlu sweep experiment=digits_lr                        a ready-made sweep from conf/experiment/
    danlu sweep lr='tag(log, interval(1e-4, 1e-1))' batch_size=32,64 sweep.num_samples=8
    danlu resume NAME                                       continue an interrupted sweep
    danlu extend NAME sweep.num_samples=48                  grow an ended sweep: more configurations, seeds, space
    danlu run lr=0.1 epochs=5                               one trial, in this process, no Ray
    danlu rerun RUN_ID                                      a trial again from its MLflow run; checks it reproduces
    danlu ui                                                the MLflow UI on the configured store
    danlu report NAME                                       the morning report: which configurations are really better
    danlu compare batch_size=64 --vs batch_size=63 --seeds 10   a paired-seed A/B of any claim

On a Ray cluster, from a login node (--address http://HEAD:8265, or RAY_ADDRESS):
    danlu submit experiment=digits_lr tracking=server      the sweep runs on the cluster; returns at once
    danlu status [ID] · danlu logs [ID] [--follow] · danlu stop [ID] · danlu list

Overrides are Hydra overrides. Exit codes: 0 ok, 1 the sweep failed, 2 bad input.
This module imports nothing heavy: Ray, torch and MLflow load only when a command needs them.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from orchestrator import __version__
from orchestrator.errors import BadInput, SweepFailed

CLUSTER_COMMANDS = ("status", "logs", "stop", "list", "supervise")
OVERRIDES_HELP = "Hydra overrides: key=value, group=option, and for sweeps key=<sweep expression>"


SEARCH_HELP = """searchers (the search config group; the header line says which runs, with its settings):
  search=random   the default: sweep.num_samples draws (Tune's BasicVariantGenerator)
  search=grid     every combination of the listed values, once per seed (no intervals)
  search=optuna   Optuna through Tune's OptunaSearch, learning from finished configurations:
                  search.sampler=tpe|gp|cmaes|random|qmc, search.n_startup_trials=10,
                  search.max_concurrent=4 (configurations outstanding)
  search=arms     explicit configurations: the i-th value of every key together (danlu compare's)
  sweep.seeds=[0,1,2] runs each configuration once per seed under every searcher, and ASHA then
  stops or continues a configuration's seeds together, on their mean;
  sweep.search_seed=N makes the sampling repeat exactly (default: a fresh seed, printed)"""


def build_parser() -> argparse.ArgumentParser:
    """danlu's argparse parser: one subcommand per command (sweep, resume, run, ui, report, compare, submit, status,
    logs, stop, list, and the supervisor's own)."""
    parser = argparse.ArgumentParser(prog="danlu", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"danlu {__version__}")
    parser.add_argument("--config-dir", help="directory holding config.yaml (default: ./conf)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("init", help="make the smallest working project here (conf/config.yaml, conf/job/NAME.yaml, "
                       "conf/sweep/NAME.yaml, jobs/NAME.py); never overwrites a file")
    p.add_argument("dir", nargs="?", default=".", help="the project's directory (default: here)")
    p.add_argument("--job", default="train", help="the job's name (default: train)")
    p.add_argument("--from", dest="source", metavar="MODULE:FUNCTION",
                   help="wrap an existing function: its keyword arguments become the job's hyperparameters and its "
                   "return value the trial's result")
    p.add_argument("--metric", help="the metric the sweep ranks on (default: loss; with --from: result)")
    p.add_argument("--mode", choices=("max", "min"), help="max or min (default: min; with --from: max)")

    p = sub.add_parser("sweep", help="run a sweep on Ray Tune (ASHA), logged to MLflow",
                       formatter_class=argparse.RawDescriptionHelpFormatter, epilog=SEARCH_HELP)
    p.add_argument("--verbose", action="store_true", help="show Ray's own logs and per-iteration tables")
    p.add_argument("--no-preflight", action="store_true", help="skip the fast checks a new sweep runs first "
                   "(reach, metric, nan, overfit: danlu preflight)")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)

    p = sub.add_parser("plan", help="what a sweep would run and cost: configs, space, trials, rungs, expected steps, "
                       "resource-hours, fit, warnings; launches nothing")
    p.add_argument("--probe", action="store_true", help="measure the step time: a few reports of the base config here")
    p.add_argument("--address", help="a Ray cluster's address (HEAD:6379) to check the fit against")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)

    p = sub.add_parser("preflight", help="checks before a sweep: the stores answer, the metric is reported, no NaN "
                       "at the lr's bounds, the job overfits a tiny batch, the memory corner fits")
    p.add_argument("--lr-find", action="store_true", help="also the LR range test: suggests lr bounds, draws the curve")
    p.add_argument("--only", metavar="CHECKS", help="only these checks, comma-separated: reach,metric,nan,overfit,memory")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)

    p = sub.add_parser("rerun", help="run a trial again, here, from what its MLflow run recorded (config, seed, "
                       "commit); says whether every metric's history is reproduced exactly")
    p.add_argument("run_id", help="the trial's MLflow run id")
    p.add_argument("overrides", nargs="*", help="tracking=..., tracking.uri=... (where the run is)")

    p = sub.add_parser("resume", help="continue a sweep that was interrupted (same runs, same trials)")
    p.add_argument("name", help="the sweep's name (its directory under output_dir)")
    p.add_argument("overrides", nargs="*", help="output_dir=... if the sweep was not stored under ./outputs")

    p = sub.add_parser("extend", help="grow a sweep (one that has not ended is resumed to its end first), in the "
                       "same sweep and MLflow parent run: more "
                       "configurations (sweep.num_samples=N, the new total), more seeds (sweep.seeds=[...], a "
                       "superset; --top K for the report's best K only) or a new space (sweep.space.KEY=EXPR)")
    p.add_argument("name", help="the sweep's name (its directory under output_dir)")
    p.add_argument("--top", type=int, default=None, metavar="K",
                   help="with more seeds: only the K best configurations, ranked as the report ranks them")
    p.add_argument("--plan", action="store_true", help="print the extension's new work and its forecast; run nothing")
    p.add_argument("overrides", nargs="*", help="sweep.num_samples=N, sweep.seeds=[...], sweep.space.KEY=EXPR; "
                   "output_dir=... if the sweep was not stored under ./outputs; sweep.budget.*")

    p = sub.add_parser("run", help="run one trial in this process (no Ray, no MLflow), for debugging")
    p.add_argument("--cfg", action="store_true", help="print the composed config and exit")
    p.add_argument("overrides", nargs="*", help="Hydra overrides (plain values only)")

    p = sub.add_parser("ui", help="start the MLflow UI on the configured tracking store, on 127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--sweep", help="the sweep to open (default: the newest)")
    p.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. tracking.uri=sqlite:///other.db")

    p = sub.add_parser("report", help="a sweep's report: configurations ranked by their mean over seeds, with 95%% "
                       "t-intervals, which are indistinguishable from the best, importance, plots")
    p.add_argument("name", help="the sweep's name")
    p.add_argument("overrides", nargs="*", help="tracking=..., tracking.uri=..., output_dir=..., report.*=...")

    p = sub.add_parser("compare", help="a paired-seed A/B of any claim: the effect with its 95%% CI, a paired "
                       "test, a verdict", description="danlu compare A... --vs B... [--seeds N] [--set OVERRIDE...]\n"
                       "  danlu compare batch_size=64 --vs batch_size=63 --seeds 10\n"
                       "  danlu compare --set experiment=lore_batch63      a ready one from conf/experiment/lore_*",
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("a", nargs="*", metavar="A", help="arm A: key=value overrides")
    p.add_argument("--vs", nargs="+", default=[], metavar="B", help="arm B: key=value overrides")
    p.add_argument("--seeds", type=int, default=None, help="seeds 0..N-1, shared by both arms (default: a ready experiment's compare.seeds, else 5)")
    p.add_argument("--set", nargs="+", default=[], metavar="OVERRIDE",
                   help="overrides for both arms (job=..., epochs=..., experiment=lore_...)")
    p.add_argument("--name", help="the comparison's sweep name (default: compare-<job>-<hash of the command>)")

    address = argparse.ArgumentParser(add_help=False)
    address.add_argument("--address", help="the Ray head's dashboard, e.g. http://head:8265 "
                         "(default: submit.address in the config, i.e. RAY_ADDRESS)")
    p = sub.add_parser("submit", parents=[address], help="run the sweep on a Ray cluster (Ray Jobs API); returns at once")
    p.add_argument("--extend", metavar="NAME", help="run `danlu extend NAME OVERRIDES` there instead of a new sweep")
    p.add_argument("--top", type=int, default=None, metavar="K", help="with --extend and more seeds: the K best only")
    p.add_argument("overrides", nargs="*", help=OVERRIDES_HELP)
    p = sub.add_parser("status", parents=[address], help="a submitted sweep's progress and its driver's state")
    p.add_argument("id", nargs="?", help="the id danlu submit printed, or the sweep's name (default: the newest)")
    p = sub.add_parser("logs", parents=[address], help="a submitted sweep's driver output")
    p.add_argument("id", nargs="?", help="the id danlu submit printed, or the sweep's name (default: the newest)")
    p.add_argument("--follow", "-f", action="store_true", help="keep printing until the sweep ends")
    p = sub.add_parser("stop", parents=[address], help="stop a submitted sweep for good (it stays resumable)")
    p.add_argument("id", nargs="?", help="the id danlu submit printed, or the sweep's name (default: the newest)")
    p = sub.add_parser("list", parents=[address], help="the sweeps on this machine (running, finished, interrupted); "
                       "with --address or RAY_ADDRESS, those submitted to the cluster")
    p.add_argument("--output-dir", default="outputs", help="where this machine's sweeps are stored (default: outputs)")
    p = sub.add_parser("supervise", parents=[address])  # started on the cluster by `danlu submit`, not by hand
    p.add_argument("--id", required=True)
    p.add_argument("--resubmits", type=int, required=True)
    p.add_argument("--grace", type=int, required=True)
    p.add_argument("--extend", metavar="NAME")
    p.add_argument("--top", type=int, default=None)
    p.add_argument("overrides", nargs="*")
    return parser


def main(argv: list[str] | None = None) -> int:
    """The `danlu` command: parse, run the subcommand, map bad input to one message and exit 2 (no traceback)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and args.command in ("extend", "submit") and not any(a.startswith("-") for a in extra):
        args.overrides += extra  # overrides after --top K: argparse ends a positional list at an option
    elif extra:
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if not args.command:
        parser.print_help()
        return 2
    try:
        from orchestrator.config.compose import find_config_dir

        if args.command == "init":
            from orchestrator.scaffold import init

            return init(args.dir, args.job, args.source, args.metric, args.mode)
        if args.command in CLUSTER_COMMANDS and (args.address or os.environ.get("RAY_ADDRESS")):
            return _cluster(args, None)  # no config needed (a login node may have none at hand)
        if args.command == "list" and not _configured_address(args.config_dir):  # no cluster: this machine's sweeps
            from orchestrator.storage.catalog import show

            return show(Path(args.output_dir), sys.stdout)
        try:
            config_dir = find_config_dir(args.config_dir)
        except BadInput:
            if args.command != "report":
                raise
            config_dir = None  # a Hydra app's sweep needs no conf/ of danlu's: _report looks at the sweep
        if args.command == "report":
            return _report(args, config_dir)
        if config_dir is None:  # found, or find_config_dir raised for any command but report
            raise BadInput("no conf/ found")
        if args.command == "sweep":
            from orchestrator.run.sweep import run_sweep

            return run_sweep(args.overrides, config_dir, verbose=args.verbose, command=["danlu", *sys.argv[1:]],
                             preflight=not args.no_preflight)
        if args.command == "plan":
            from orchestrator.launch.plan import plan
            from orchestrator.launch.preview import show as show_plan

            return show_plan(plan(args.overrides, config_dir), probe=args.probe, address=args.address)
        if args.command == "preflight":
            return _preflight(args, config_dir)
        if args.command == "rerun":
            from orchestrator.review.rerun import rerun

            return rerun(args.run_id, args.overrides, config_dir)
        if args.command == "resume":
            return _resume(args, config_dir)
        if args.command == "extend":
            return _extend(args, config_dir)
        if args.command == "run":
            return _run(args, config_dir)
        if args.command == "ui":
            return _ui(args, config_dir)
        if args.command == "compare":
            from orchestrator.review.compare import run_compare

            return run_compare(args.a, args.vs, args.seeds, args.set, args.name, config_dir,
                               command=["danlu", *sys.argv[1:]])
        if args.command == "submit":
            from orchestrator.launch.extension import check_top
            from orchestrator.remote.submit import submit

            check_top(args.top, args.extend is not None)
            return submit(args.overrides, config_dir, args.address, extend=args.extend, top=args.top)
        return _cluster(args, config_dir)
    except BadInput as exc:
        print(f"danlu: error: {exc}", file=sys.stderr)
        return 2
    except SweepFailed as exc:
        print(f"danlu: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\ndanlu: interrupted", file=sys.stderr)
        return 130
    return 2


def _configured_address(config_dir_flag: str | None) -> str | None:
    """submit.address of the config (conf/local may name a cluster), if there is a config here."""
    from orchestrator.config.compose import compose, find_config_dir, hydra_context

    try:
        config_dir = find_config_dir(config_dir_flag)
    except BadInput:
        return None
    with hydra_context(config_dir):
        return compose([]).submit.get("address")


def _resume(args, config_dir: Path) -> int:
    from orchestrator.run.sweep import run_sweep
    from orchestrator.storage.sweep_files import SAVED, STATE_DIR, saved_overrides

    where = [o for o in args.overrides if o.startswith("output_dir=")]
    budget = [o for o in args.overrides if o.lstrip("+").startswith("sweep.budget.")]
    if len(where) + len(budget) != len(args.overrides):
        raise BadInput("danlu resume takes only output_dir=... and sweep.budget.*=... (a larger budget): a sweep "
                       "resumes with the settings it started with.")
    output_dir = where[-1].split("=", 1)[1] if where else "outputs"
    saved = saved_overrides(Path(output_dir, args.name))
    if saved is None:
        from orchestrator.storage.catalog import names

        known = names(Path(output_dir))
        raise BadInput(f"danlu resume {args.name}: no sweep of that name under {output_dir}/ (looked for "
                       f"{Path(output_dir, args.name, STATE_DIR, SAVED)}); "
                       + (f"the sweeps there: {', '.join(known)}." if known else "there are no sweeps there."))
    if any(o.startswith("app:") for o in saved):
        raise BadInput(f"danlu resume {args.name}: a Hydra app's sweep (hydra/sweeper=danlu); resume it with the app's "
                       f"own command and hydra.sweeper.name={args.name}.")
    kept = [o for o in saved if not o.startswith(("sweep.name=", "output_dir="))]
    return run_sweep([*kept, *budget, f"sweep.name={args.name}", *where], config_dir, verbose=False,
                     command=["danlu", *sys.argv[1:]])


def _extend(args, config_dir: Path) -> int:
    """`danlu extend NAME overrides`: the sweep planned with its own overrides and the extension's (one of the same
    key replaces its own), then run as an extension (orchestrator/launch/extension.py decides, under its lock). A
    sweep that has not ended is resumed to its end first; more seeds with more configurations are two extensions."""
    from orchestrator.launch.extension import NotEnded, Request, Target, check_top, steps
    from orchestrator.launch.plan import plan

    check_top(args.top, True)
    t = Target.of(args.name, args.overrides)
    whole = plan(t.extended(), config_dir)
    parts = steps(whole, t, args.top)
    if args.plan:
        from orchestrator.launch.extension import preview

        own, top = parts[0]
        p = plan(t.with_own(own).extended(), config_dir)
        try:
            lines = preview(p, Request(own, top), t.saved)
        except NotEnded as exc:
            raise BadInput(f"{exc}: an extension is planned from the sweep's ended trials; without --plan, danlu "
                           "extend resumes it to its end first, then extends it.") from None
        if len(parts) > 1:
            lines.append("  then: a second extension, the new configurations under every seed (planned once the "
                         "first has ended)")
        print("\n".join(lines))
        return 0
    codes = []
    for own, top in parts:
        codes.append(_extend_once(t.with_own(own), Request(own, top, ["danlu", *sys.argv[1:]]), config_dir,
                                  whole if own == t.own else None))
        if codes[-1] == 130:  # stopped by the user
            break
    return max(codes)


def _extend_once(t, request, config_dir: Path, planned=None) -> int:
    """One extension of `t` (orchestrator/launch/extension.py Target); a sweep that has not ended is resumed to its
    end first, and an extension its resume does not end is not made (said, exit non-zero)."""
    from orchestrator.launch.extension import NotEnded
    from orchestrator.run.sweep import run_sweep

    try:
        return run_sweep(t.extended(), config_dir, verbose=False, command=request.command, extend=request,
                         planned=planned)
    except NotEnded as exc:  # decided from every earlier trial: the sweep (or its newest extension) ends first
        print(f"{exc}: it is resumed to its end first, then extended.", flush=True)
    resumed = run_sweep(t.resumed(), config_dir, verbose=False, command=request.command)
    if resumed == 130:  # stopped by the user: it stays resumable, and unextended
        return resumed
    try:
        extended = run_sweep(t.extended(), config_dir, verbose=False, command=request.command, extend=request)
    except NotEnded as exc:
        print(f"{exc} after its resume (exit {resumed}): not extended. The same command again resumes it and "
              "extends it once it ends.", file=sys.stderr, flush=True)
        return resumed or 1
    return max(resumed, extended)  # a loss or skip said by the resume keeps the exit non-zero


def _preflight(args, config_dir: Path) -> int:
    """`danlu preflight`: every check (or --only some), said as each ends; 1 if any FAILed, 2 for a metric the job
    never reports (bad input, as for danlu sweep)."""
    from orchestrator.launch import preflight
    from orchestrator.launch.plan import plan

    names = tuple(n.strip() for n in args.only.split(",") if n.strip()) if args.only else preflight.ALL
    unknown = [n for n in names if n not in preflight.ALL]
    if unknown:
        raise BadInput(f"--only {args.only}: {', '.join(unknown)} is no check; the checks are {', '.join(preflight.ALL)}.")
    p = plan(args.overrides, config_dir)
    print(f"danlu preflight: job {p.cfg.job.name} ({p.cfg.job.fn}), sweep {p.cfg.sweep.name}", flush=True)
    out = preflight.run(p, names, lr_find=args.lr_find, say=lambda line: print(line, flush=True))
    bad = out.failed
    warned = [c.name for c in out.checks if c.status == preflight.WARN]
    if not bad:
        print(f"danlu preflight: {len(out.checks)} check(s), none failed"
              + (f"; {len(warned)} warning(s): {', '.join(warned)}" if warned else ""), flush=True)
        return 0
    print(f"danlu preflight: {len(bad)} check(s) FAILED: {', '.join(c.name for c in bad)}", flush=True)
    return 2 if any(c.bad_input for c in bad) else 1


def _report(args, config_dir: Path | None) -> int:
    """Builds the report again from what MLflow holds (the tracking settings the sweep started with, where its
    storage is here; the command line's win)."""
    from orchestrator import report
    from orchestrator.config.compose import compose, hydra_context, package_conf_dir
    from orchestrator.scheduler import saved_decisions
    from orchestrator.storage.sweep_files import read_identity, tune_dir
    from orchestrator.tracking import check_held, resolve_uri

    where = [o for o in args.overrides if o.startswith("output_dir=")]
    storage = Path(where[-1].split("=", 1)[1] if where else "outputs", args.name)
    identity = read_identity(storage) or {}
    saved = identity.get("overrides") or []
    if config_dir is None or any(o.startswith("app:") for o in saved):  # a Hydra app's (hydra/sweeper=danlu)
        config_dir = package_conf_dir()
    kept = [o for o in saved if o.lstrip("+").startswith("tracking")]
    with hydra_context(config_dir):
        cfg = compose(kept + list(args.overrides))
    report.check(cfg.report)
    uri = resolve_uri(str(cfg.tracking.uri))
    check_held(uri, str(cfg.tracking.get("store") or "mlflow"))
    from orchestrator.storage.lock import holder
    from orchestrator.storage.sweep_files import state_dir_path
    from orchestrator.tracking import open_store

    store = open_store(uri, str(cfg.tracking.experiment), str(cfg.tracking.get("store") or "mlflow"))
    lease = holder(state_dir_path(storage), float(cfg.storage.lock_ttl_s)) if storage.is_dir() else None
    running = f"its driver is pid {lease.get('pid')} on {lease.get('host')}" if lease else None
    made = report.make(store, args.name, cfg.report, storage.resolve() / ("report-partial" if running else "report"),
                       saved_decisions(tune_dir(storage, identity)), storage.resolve(), config_dir.parent,
                       running=running)
    print("\n".join(made["text"]))
    if running:
        print(f"danlu: partial report: {made['dir'] / 'report.html'} (not attached to the parent run)")
        return 0
    print(f"danlu: report: {made['dir'] / 'report.html'} (and the parent run's artifacts, report/)")
    return 0


def _cluster(args, config_dir: Path | None) -> int:
    from orchestrator.remote import submit
    from orchestrator.remote.cluster_client import resolve_address

    configured = os.environ.get("RAY_ADDRESS")
    if not args.address and config_dir is not None:
        from orchestrator.config.compose import compose, hydra_context

        with hydra_context(config_dir):
            configured = compose([]).submit.get("address")
    address = resolve_address(args.address, configured)
    if args.command == "status":
        return submit.status(address, args.id)
    if args.command == "logs":
        return submit.logs(address, args.id, args.follow)
    if args.command == "stop":
        return submit.stop(address, args.id)
    if args.command == "list":
        return submit.list_sweeps(address)
    from orchestrator.remote.supervise import supervise

    return supervise(address, args.id, args.overrides, args.resubmits, args.grace, extend=args.extend, top=args.top)


def _run(args, config_dir: Path) -> int:
    from orchestrator.config.compose import compose, hydra_context, require_job, split_overrides
    from orchestrator.trial.trainable import run_local

    cl = split_overrides(args.overrides)
    if cl.sweep:
        raise BadInput(f"danlu run takes plain values; {', '.join(cl.sweep)} is a sweep. Use danlu sweep for that.")
    with hydra_context(config_dir):
        cfg = compose(cl.fixed)
        require_job(cfg, config_dir)
    if args.cfg:
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(cfg))
        return 0
    return run_local(cfg, config_dir)


def _ui(args, config_dir: Path) -> int:
    from orchestrator.config.compose import compose, hydra_context, split_overrides
    from orchestrator.tracking import links, resolve_uri

    with hydra_context(config_dir):
        cfg = compose(split_overrides(args.overrides).fixed)
    uri = resolve_uri(str(cfg.tracking.uri))
    experiment = str(cfg.tracking.experiment)
    if uri.startswith(("http://", "https://")):
        lines = _sweep_pages(uri, experiment, args.sweep, links.ui_base(uri))
        print("danlu: the tracking store is a server: open its UI in a browser.")
        print("\n".join(lines or [f"  {uri}"]))
        return 0
    from orchestrator.tracking.ui import check_port, serve

    check_port(args.port)  # before anything is read: a taken port is the first thing to hear of
    _sweep_pages(uri, experiment, args.sweep, "")  # an unknown --sweep is bad input before the server starts
    return serve(uri, args.port, lambda: _sweep_pages(uri, experiment, args.sweep, links.ui_base(uri, args.port)))


def _sweep_pages(uri: str, experiment: str, sweep: str | None, base: str) -> list[str]:
    """The addresses of a sweep (the newest, or the one named) in MLflow's UI: its runs table, its parent run and its
    report, each opening in the model-training view."""
    from orchestrator import tags as T
    from orchestrator.tracking import links, open_store

    try:
        store = open_store(uri, experiment)
        eid, parents = store.sweeps()
    except Exception as exc:  # a server not up yet: the UI itself will say more
        print(f"danlu: warning: could not read {uri}: {type(exc).__name__}", file=sys.stderr)
        return []
    if eid is None:
        if sweep:
            raise BadInput(f"--sweep {sweep}: the store {uri} has no experiment '{experiment}' yet.")
        return []
    chosen = [r for r in parents if not sweep or r.tags.get(T.SWEEP) == sweep]
    if not chosen:
        if sweep:
            names = sorted({r.tags.get(T.SWEEP, "") for r in parents} - {""})
            raise BadInput(f"--sweep {sweep}: no sweep of that name in experiment '{experiment}' of {uri}"
                           + (f"; the sweeps there: {', '.join(names)}." if names else "."))
        return [f"danlu: no sweep in experiment '{experiment}' yet: {base}/#/experiments/{eid}/runs"]
    parent = chosen[0]
    name, params, rid = parent.tags.get(T.SWEEP), parent.params, parent.run_id
    name, metric, mode = name or "", params.get("sweep.metric") or "", params.get("sweep.mode", "max")
    shared = bool(metric) and base != "" and store.share_view(
        name, metric, mode, [k.split(".", 1)[1] for k in params if k.startswith("space.")])
    out = [f"danlu: sweep '{name}' ({parent.status.lower()}):",
           f"  runs:   {links.runs_table(base, eid, name, metric, mode, shared)}",
           f"  sweep:  {links.run(base, eid, rid)}"]
    if parent.tags.get(T.REPORT) == "made":
        out.append(f"  report: {links.report(base, eid, rid)}")
    return out


if __name__ == "__main__":
    raise SystemExit(main())
