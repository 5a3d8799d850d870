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
(anogan_guide/sweep.py, engines.py, results.py).
"""

from __future__ import annotations

import argparse
import ast
import os
import shutil
import signal
import sys
import tempfile
from functools import lru_cache
from pathlib import Path

import yaml

from .evaluate import metrics_table, read_metrics, record_parameters
from .runs import REPO_ROOT, Run, quiet

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
PATH_PARAMETERS = ("data_root",)  # made absolute: the kernel's cwd is not the caller's


class UsageError(ValueError):
    """Bad command-line input; printed as one line, exit status 2."""


def all_notebooks() -> list[Path]:
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def resolve_notebooks(names: list[str]) -> list[Path]:
    """Paths as given, or bare names (`02_latent_mapping`) looked up in notebooks/."""
    if not names:
        found = all_notebooks()
        if not found:
            raise UsageError(f"no notebooks in {NOTEBOOK_DIR}")
        return found
    paths = []
    for name in names:
        path = Path(name)
        candidates = [path, NOTEBOOK_DIR / path.name, NOTEBOOK_DIR / f"{path.name}.ipynb"]
        hit = next((c for c in candidates if c.is_file() and c.suffix == ".ipynb"), None)
        if hit is None:
            known = ", ".join(p.stem for p in all_notebooks())
            raise UsageError(f"notebook {name!r} not found; use a path or one of: {known}")
        paths.append(hit.resolve())
    return paths


def declared_parameters(notebook: Path) -> dict[str, dict]:
    """The parameters a notebook's `parameters` cell declares (papermill.inspect_notebook)."""
    return _inspect(str(notebook), Path(notebook).stat().st_mtime_ns)


@lru_cache(maxsize=64)
def _inspect(notebook: str, mtime_ns: int) -> dict[str, dict]:
    import papermill

    return papermill.inspect_notebook(notebook)


def notebook_defaults(notebook: Path) -> dict:
    """The default value of each parameter of a notebook's `parameters` cell (a Python literal;
    any other expression as its source text)."""
    def value(source: str):
        try:
            return ast.literal_eval(source)
        except (ValueError, SyntaxError):
            return source

    return {name: value(p["default"]) for name, p in declared_parameters(notebook).items()}


def read_params_file(path: str | None) -> tuple[dict, dict]:
    """(values for every notebook, {notebook stem: values}) from a YAML parameters file."""
    if not path:
        return {}, {}
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"parameters file {path} not found; pass an existing YAML file to -f")
    try:
        data = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as err:
        raise UsageError(f"parameters file {path} is not valid YAML ({err.__class__.__name__}); "
                         f"fix its syntax") from None
    if not isinstance(data, dict):
        raise UsageError(f"parameters file {path} must be a mapping of NAME: VALUE")
    per_notebook = data.pop("notebooks", None) or {}
    if not isinstance(per_notebook, dict) or not all(isinstance(v, dict)
                                                     for v in per_notebook.values()):
        raise UsageError(f"{path}: 'notebooks' must map notebook names to NAME: VALUE mappings")
    return data, per_notebook


def plan_parameters(notebooks: list[Path], common: dict, per_notebook: dict,
                    overrides: dict, out: Path) -> list[dict]:
    """The parameters to inject into each notebook. A -p name that no selected notebook declares,
    or a file name that no notebook of the guidebook declares, is an error."""
    declared = {nb: declared_parameters(nb) for nb in notebooks}
    selected = set().union(*(set(d) for d in declared.values()))
    unknown = sorted(set(overrides) - selected)
    if unknown:
        raise UsageError(f"unknown parameter {', '.join(unknown)}; the selected notebooks "
                         f"declare: {', '.join(sorted(selected))}")
    guide = {nb.stem: nb for nb in all_notebooks()} | {nb.stem: nb for nb in notebooks}
    if set(common) - selected:
        known = set().union(*(set(declared_parameters(nb)) for nb in guide.values()))
        unknown = sorted(set(common) - known)
        if unknown:
            raise UsageError(f"unknown parameter {', '.join(unknown)} in the parameters file; "
                             f"the notebooks declare: {', '.join(sorted(known))}")
    for stem, values in per_notebook.items():
        if stem not in guide:
            raise UsageError(f"the parameters file names notebook {stem!r}, which does not "
                             f"exist; use one of: {', '.join(sorted(guide))}")
        names = set(declared.get(guide[stem]) or declared_parameters(guide[stem]))
        bad = sorted(set(values) - names)
        if bad:
            raise UsageError(f"unknown parameter {', '.join(bad)} for {stem} in the parameters "
                             f"file; it declares: {', '.join(sorted(names))}")
    plans = []
    for nb in notebooks:
        values = {**common, **per_notebook.get(nb.stem, {}), **overrides}
        values = {k: v for k, v in values.items() if k in declared[nb]}
        for k in PATH_PARAMETERS:
            if isinstance(values.get(k), str) and values[k]:
                values[k] = str(Path(values[k]).expanduser().resolve())
        if "run_dir" in declared[nb]:
            values["run_dir"] = str(out)
        plans.append(values)
    return plans


def execute(notebooks: list[Path], plans: list[dict], out: Path) -> None:
    """Run each notebook with papermill; stop at the first failure with its notebook and cell.
    Each notebook's resolved parameters are recorded in metrics.json once it has finished
    (the sweep compares them with the ones it is asked for)."""
    import papermill
    from papermill.exceptions import PapermillExecutionError

    _poll_shell_in_slices()
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    for nb, params in zip(notebooks, plans, strict=True):
        target = out / "notebooks" / nb.name
        print(f"[anogan-guide] {nb.name}  " + " ".join(f"{k}={v}" for k, v in params.items()
                                                        if k != "run_dir"), flush=True)
        record_parameters(Run(out), nb.stem, None)
        try:
            papermill.execute_notebook(str(nb), str(target), parameters=params,
                                       kernel_name="python3", progress_bar=False,
                                       cwd=str(out), log_output=False,
                                       kernel_manager_class=kernel_manager_class())
        except PapermillExecutionError as err:
            raise RunFailed(f"{nb.name} failed in cell [{err.exec_count}] "
                            f"({_first_line(target, err.exec_count)}): {err.ename}: "
                            f"{err.evalue}; executed copy: {target}") from None
        record_parameters(Run(out), nb.stem, params, notebook_defaults(nb))


@lru_cache(maxsize=1)
def kernel_manager_class() -> type:
    """The kernels `run` starts: reached over Unix sockets in a private folder instead of TCP
    ports (nothing to eavesdrop on, so no 'Kernel is running over TCP without encryption'
    warning, and no port races between parallel runs). Unless ANOGAN_GUIDE_QUIET=1, their
    progress bars (runs.progress) are drawn on this terminal: the kernel keeps its stderr
    (capture_fd_output off) and ANOGAN_GUIDE_PROGRESS=terminal tells the bars to use it."""
    from jupyter_client.manager import AsyncKernelManager
    from traitlets import default

    class GuideKernelManager(AsyncKernelManager):
        @default("transport")
        def _transport_default(self) -> str:
            return "ipc"

        @default("ip")
        def _ip_default(self) -> str:  # the socket files' prefix, in a folder only we can use
            return str(Path(tempfile.mkdtemp(prefix="anogan-guide-kernel-")) / "kernel")

        async def start_kernel(self, **kw):
            if not quiet():
                kw["env"] = {**kw.get("env", os.environ), "ANOGAN_GUIDE_PROGRESS": "terminal"}
                kw["extra_arguments"] = [*kw.get("extra_arguments", []),
                                         "--IPKernelApp.capture_fd_output=False"]
            return await super().start_kernel(**kw)

        async def cleanup_resources(self, restart: bool = False) -> None:
            await super().cleanup_resources(restart=restart)
            if not restart:
                shutil.rmtree(Path(self.ip).parent, ignore_errors=True)

    return GuideKernelManager


def _first_line(notebook: Path, exec_count: int) -> str:
    """The first source line of the executed cell numbered `exec_count`, to name it."""
    import nbformat

    try:
        cells = nbformat.read(notebook, as_version=4).cells
        source = next(c.source for c in cells if c.get("execution_count") == exec_count)
    except (OSError, StopIteration, ValueError):
        return "source not available"
    first = next((line for line in source.splitlines() if line.strip()), "")
    return repr(first[:60] + ("..." if len(first) > 60 else ""))


def _poll_shell_in_slices() -> None:
    """Work around nbclient's occasional endless wait on a widget cell (jupyter/nbclient#312):
    a reply that arrives while the client is blocked in an untimed poll is sometimes never seen.
    Polling in one-second slices sees it; nothing else changes. Seen here on about one run in
    four of 00_data_prep before the change and in none of twelve after."""
    from queue import Empty

    from jupyter_client.channels import AsyncZMQSocketChannel

    if getattr(AsyncZMQSocketChannel.get_msg, "_in_slices", False):
        return
    untimed = AsyncZMQSocketChannel.get_msg

    async def get_msg(self, timeout: float | None = None):
        if timeout is not None:
            return await untimed(self, timeout)
        while True:
            try:
                return await untimed(self, 1.0)
            except Empty:
                continue

    get_msg._in_slices = True
    AsyncZMQSocketChannel.get_msg = get_msg


class RunFailed(RuntimeError):
    """A notebook raised; printed as one line, exit status 1."""


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
        methods = sweep.parse_methods(args.methods)
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
    common, per_notebook = read_params_file(args.params_file)
    overrides = {name: yaml.safe_load(value) if value != "" else "" for name, value in args.p}
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
    sw.add_argument("--methods", default="anogan,ganomaly,gradcon,hybrid",
                    help="comma-separated: anogan, ganomaly, gradcon, hybrid")
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UsageError as err:
        print(f"anogan-guide: error: {err}", file=sys.stderr)
        return 2
    except RunFailed as err:
        print(f"anogan-guide: {err}", file=sys.stderr)
        return 1
    except Interrupted as err:
        print(f"anogan-guide: {err}", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
