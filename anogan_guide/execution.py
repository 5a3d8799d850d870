"""Executing the guidebook's notebooks headlessly with papermill: finding them, the parameters
their `parameters` cells declare (and the defaults), parameters files, the values each notebook
gets, and the execution itself (one run folder at a time: runs.run_lock). The command line
(cli.py) and the sweep's planning use it."""

from __future__ import annotations

import ast
import os
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import yaml

from .evaluate import record_parameters
from .runs import REPO_ROOT, Run, quiet, run_lock

NOTEBOOK_DIR = REPO_ROOT / "notebooks"
PATH_PARAMETERS = ("data_root",)  # made absolute: the kernel's cwd is not the caller's


class UsageError(ValueError):
    """Bad command-line input; printed as one line, exit status 2."""


def all_notebooks() -> list[Path]:
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]*_*.ipynb"))


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
    (the sweep compares them with the ones it is asked for). Another `anogan-guide run` into the
    same folder meanwhile stops at once (runs.RunInUse) instead of overwriting this one."""
    _poll_shell_in_slices()
    (out / "notebooks").mkdir(parents=True, exist_ok=True)
    with run_lock(out):
        _execute_each(notebooks, plans, out)


def _execute_each(notebooks: list[Path], plans: list[dict], out: Path) -> None:
    import papermill
    from papermill.exceptions import PapermillExecutionError

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
