"""`anogan-guide run`: execute the guidebook's notebooks headlessly with papermill.

    anogan-guide run [NOTEBOOK ...] [-p NAME VALUE ...] [-f PARAMS.yaml] --out DIR

Executed notebooks go to DIR/notebooks/, artifacts to DIR (passed to every notebook as
`run_dir`). A parameters file holds top-level values for every notebook that declares them and
an optional `notebooks:` mapping of per-notebook values (`notebooks: {03_ganomaly: {epochs: 2}}`).
`-p` values are parsed as YAML scalars (3 -> int, true -> bool, ../data -> str) and override both.

    anogan-guide sweep [--dataset D] [--classes 0-9] [--seeds 0,1,2] [--methods ...]
                       [--engine local [--jobs N] | --engine ray [--address ADDR]
                        [--cpus-per-run N] [--gpus-per-run G]] [--keep-different] [--dev]
                       [-p NAME VALUE ...] [-f PARAMS.yaml] --out DIR

runs the same notebooks for every (class, seed) and writes DIR/results.csv and results.md
(anogan_guide/sweep.py, engines.py, results.py). Executing notebooks: execution.py.

    anogan-guide score RUN_DIR|detector.pt IMAGES... [--method M] [--out scores.csv] [--maps DIR]
    anogan-guide export RUN_DIR [--method M] --out detector.pt

score new images with a trained detector, and write one to a file (apply.py, detector.py).

    anogan-guide compare NEW_SWEEP_DIR results/cifar10 [--tolerance 0.01] [--methods M,...]

compares a re-made sweep's figures with the committed ones (reproduce.py).
"""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

import yaml

from .evaluate import metrics_table, read_metrics
from .execution import (
    RunFailed,
    UsageError,
    execute,
    notebook_defaults,
    plan_parameters,
    read_params_file,
    resolve_notebooks,
)
from .runs import Run, RunInUse


class Interrupted(RuntimeError):
    """Ctrl-C during a sweep, after its runs were stopped; one line, exit status 130."""


def cmd_run(args: argparse.Namespace) -> int:
    notebooks = resolve_notebooks(args.notebooks)
    common, per_notebook = read_params_file(args.params_file)
    overrides = {name: yaml.safe_load(value) if value != "" else "" for name, value in args.p}
    out = Path(args.out).expanduser().resolve()
    plans = plan_parameters(notebooks, common, per_notebook, overrides, out)
    out.mkdir(parents=True, exist_ok=True)
    execute(notebooks, plans, out)
    data = read_metrics(Run(out))
    if data:
        print(metrics_table(data))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from functools import partial

    from . import engines, results, sweep

    try:
        classes = sweep.parse_list(args.classes, "class", integers=args.dataset != "folder")
        seeds = sweep.parse_list(args.seeds, "seed")
        common, per_notebook = read_params_file(args.params_file)
        overrides = {name: yaml.safe_load(value) if value != "" else "" for name, value in args.p}
        methods = sweep.parse_methods(args.methods, {
            notebook: {**common, **per_notebook.get(notebook, {}), **overrides}
            for notebook, _ in sweep.NEEDS_PARAMETER.values()})
    except sweep.SweepError as err:
        raise UsageError(str(err)) from None
    out = Path(args.out).expanduser().resolve()
    if args.engine == "local":
        ray_only = [flag for flag, value in (("--address", args.address),
                                              ("--cpus-per-run", args.cpus_per_run),
                                              ("--gpus-per-run", args.gpus_per_run)) if value is not None]
        if ray_only:
            raise UsageError(f"{', '.join(ray_only)} only apply to --engine ray; the local engine "
                             f"takes --jobs")
        jobs = 1 if args.jobs is None else args.jobs
        if jobs < 1:
            raise UsageError(f"--jobs {jobs}: give at least 1 run at a time")
        engine = partial(engines.run_local, jobs=jobs)
    else:
        if args.jobs is not None:
            raise UsageError("--jobs only applies to --engine local; on Ray, --cpus-per-run and "
                             "--gpus-per-run decide how many runs fit at once")
        cpus = 1.0 if args.cpus_per_run is None else args.cpus_per_run
        gpus = 0.0 if args.gpus_per_run is None else args.gpus_per_run
        if cpus <= 0 or gpus < 0:
            raise UsageError(f"--cpus-per-run {cpus:g} --gpus-per-run {gpus:g}: give more than 0 "
                             f"CPUs and at least 0 GPUs per run")
        engine = partial(engines.run_ray, out=out, address=args.address, cpus_per_run=cpus,
                         gpus_per_run=gpus)
    fixed = sorted({"dataset", "normal_class", "seed", "run_dir"} & {name for name, _ in args.p})
    if fixed:
        raise UsageError(f"-p {', '.join(fixed)}: the sweep sets these itself; use --dataset, "
                         f"--classes and --seeds")
    # check the notebooks, the -p names and the parameters file once, before any run starts
    notebooks = resolve_notebooks(sweep.notebooks_for(methods))
    plan_parameters(notebooks, common, per_notebook, overrides, out)

    def plan(run: sweep.SweepRun) -> dict[str, dict]:
        own = {"dataset": run.dataset, "normal_class": run.normal_class, "seed": run.seed}
        values = plan_parameters(notebooks, common, per_notebook, {**overrides, **own}, run.folder)
        return {nb.stem: v for nb, v in zip(notebooks, values, strict=True)}

    out.mkdir(parents=True, exist_ok=True)
    signal.signal(signal.SIGTERM, _interrupt)  # kill, a batch system's time limit: as Ctrl-C
    try:
        outcome = sweep.sweep(args.dataset, classes, seeds, methods, out, plan=plan,
                              engine=engine, keep_different=args.keep_different,
                              defaults={nb.stem: notebook_defaults(nb) for nb in notebooks})
    except engines.EngineError as err:
        raise UsageError(str(err)) from None
    results.write_results(args.dataset, classes, seeds, out, flagged=outcome.kept_different,
                          dev=args.dev)
    print(f"[anogan-guide] results: {out / 'results.csv'}, {out / 'results.md'}")
    total = len(classes) * len(seeds)
    if outcome.interrupted:
        raise Interrupted("sweep interrupted: the runs still going were stopped, the finished "
                          "ones are kept; run the same command again to resume (it skips them)")
    if outcome.failures:
        raise RunFailed(f"sweep: {len(outcome.failures)} of {total} runs failed "
                        f"({', '.join(outcome.failures)}); see each run's sweep.log, fix and run "
                        f"the same command again to resume")
    return 0


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="anogan-guide", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="execute notebooks with papermill into a run folder")
    run.add_argument("notebooks", nargs="*", help="notebooks to run (default: all, in order)")
    run.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="a parameter for every notebook that declares it")
    run.add_argument("-f", dest="params_file", metavar="PARAMS.yaml", help="parameters file")
    run.add_argument("--out", required=True, help="the run folder (run_dir) to write")
    run.set_defaults(func=cmd_run)
    sw = sub.add_parser("sweep", help="run notebooks over classes and seeds; results.csv/.md")
    sw.add_argument("--dataset", default="digits", help="dataset of every run (default: digits)")
    sw.add_argument("--classes", default="0-9", help="normal classes, e.g. 0-9 or 0,1,7")
    sw.add_argument("--seeds", default="0", help="seeds, e.g. 0,1,2 or 0-4")
    sw.add_argument("--methods", default="anogan,ganomaly,gradcon,hybrid,ensemble",
                    help="comma-separated: anogan, ganomaly, gradcon, hybrid, rotnet, ensemble (listed "
                         "with ganomaly and gradcon)")
    sw.add_argument("--engine", choices=("local", "ray"), default="local",
                    help="where the runs execute: this machine (default) or a Ray cluster")
    sw.add_argument("--jobs", type=int, help="local engine: runs at a time (default 1; one GPU "
                    "each when there are several)")
    sw.add_argument("--address", help="ray engine: the cluster to join, e.g. auto or "
                    "HOST:6379 (default: start a local Ray instance)")
    sw.add_argument("--cpus-per-run", type=float, help="ray engine: CPUs per run (default 1; "
                    "also its OMP_NUM_THREADS)")
    sw.add_argument("--gpus-per-run", type=float, help="ray engine: GPUs per run (default 0)")
    sw.add_argument("--keep-different", action="store_true", help="keep finished runs made "
                    "with other parameters (flagged in results.md) instead of re-running them")
    sw.add_argument("--dev", action="store_true", help="results.md also shows the development "
                    "AUROC/AUPRC (validation normals vs other classes' training images)")
    sw.add_argument("-p", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="a parameter for every notebook that declares it")
    sw.add_argument("-f", dest="params_file", metavar="PARAMS.yaml", help="parameters file")
    sw.add_argument("--out", required=True, help="the sweep folder (DIR/<dataset>/class<c>_seed<s>)")
    sw.set_defaults(func=cmd_sweep)
    from .apply import add_parsers

    add_parsers(sub)  # anogan-guide score / export (apply.py)
    from .reproduce import add_parser

    add_parser(sub)  # anogan-guide compare (reproduce.py)
    return parser


def main(argv: list[str] | None = None) -> int:
    from .apply import ScoreError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ScoreError as err:
        print(f"anogan-guide: error: {err}", file=sys.stderr)
        return 1
    except UsageError as err:
        print(f"anogan-guide: error: {err}", file=sys.stderr)
        return 2
    except (RunFailed, RunInUse) as err:
        print(f"anogan-guide: {err}", file=sys.stderr)
        return 1
    except Interrupted as err:
        print(f"anogan-guide: {err}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
