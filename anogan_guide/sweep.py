"""`anogan-guide sweep`: the guidebook's notebooks over classes and seeds, then one results table.

    anogan-guide sweep --dataset mnist --classes 0-9 --seeds 0,1,2 \
        --methods anogan,ganomaly,gradcon,hybrid,ensemble [--engine local --jobs N | --engine ray ...] \
        --out DIR [-p NAME VALUE ...] [-f P.yaml] [--keep-different]

Each (class, seed) is one run folder, DIR/<dataset>/class<c>_seed<s>/, filled by
`anogan-guide run` in a subprocess (00_data_prep plus the notebooks of the chosen methods) on an
engine (engines.py: this machine, or a Ray cluster). Each run records the parameters passed to
every notebook it ran and the defaults of that notebook's parameters cell (metrics.json's
"parameters" and "defaults"); a method already there with the requested values is skipped, one
made with others (passed or default) runs again (or, with --keep-different, is kept and
flagged), so the same command resumes an interrupted sweep and a changed parameter or default
re-runs what it changes; a method made from others (the ensemble) runs again when one of its
parts does, or did since (a sweep stopped between the two: the part's entry in metrics.json is
stamped later than the method's, or, for entries made before the stamps, its saved scores are
newer). A training notebook the run finished with the requested values is given `resume: true`,
so it reloads its training rather than repeating it (a GAN whose mapping was interrupted).
The results files come from results.py.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import yaml

from . import latentnames
from .engines import Outcome, Task, run_local
from .evaluate import read_metrics
from .runs import Run, atomic_path, progress

# method -> the notebooks that produce it (after 00_data_prep)
METHOD_NOTEBOOKS: dict[str, tuple[str, ...]] = {
    "anogan": ("01_dcgan_training", "02_latent_mapping"),
    "ganomaly": ("03_ganomaly",),
    "gradcon": ("04_gradcon",),
    "hybrid": ("05_hybrid",),
    "rotnet": ("05b_rotnet",),
    "ensemble": ("06_ensemble",),
}
# method -> the methods whose results it is made from (listed with it; re-run, they re-run it)
METHOD_NEEDS: dict[str, tuple[str, ...]] = {"ensemble": ("ganomaly", "gradcon")}
# method -> (its notebook, the parameter naming the methods it is made from, when given)
NEEDS_PARAMETER: dict[str, tuple[str, str]] = {"ensemble": ("06_ensemble", "parts")}
# method -> its metrics.json entries (02 names AnoGAN's after its GAN loss and records the
# f-AnoGAN encoder's beside the search's)
METHOD_ENTRIES: dict[str, tuple[str, ...]] = {
    "anogan": latentnames.ENTRIES,
    "ganomaly": ("ganomaly",),
    "gradcon": ("gradcon",),
    "hybrid": ("hybrid",),
    "rotnet": ("rotnet",),
    "ensemble": ("ensemble",),
}
DATA_PREP = "00_data_prep"
# recorded notebook parameters that do not change a result: where (a moved run folder or data
# folder does not make a finished run stale), `resume` (continuing from the last checkpoint
# is exact; `-p resume true` re-scores finished training when only a score-time parameter changed)
# and 02's `figure_images` (how many images the search maps for the figures when the score reads
# no mapping)
RECORD_IGNORES = ("run_dir", "data_root", "resume", "figure_images")


class SweepError(ValueError):
    """Bad sweep input; printed as one line, exit status 2."""


# ---------------------------------------------------------------------------------------------
# Parsing the command line


def parse_list(text: str, what: str, *, integers: bool = True) -> list:
    """'0-9' or '0,1,3' (or a mix, '0-2,7') as a list; non-numbers kept as names when allowed."""
    items: list = []
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        lo, dash, hi = part.partition("-")
        if dash and lo.strip().isdigit() and hi.strip().isdigit():
            lo_i, hi_i = int(lo), int(hi)
            if hi_i < lo_i:
                raise SweepError(f"{what} range {part!r} runs backwards; write it as {hi_i}-{lo_i}")
            items.extend(range(lo_i, hi_i + 1))
        elif part.lstrip("-").isdigit():
            items.append(int(part))
        elif integers:
            raise SweepError(f"{what} {part!r} is not a number; use e.g. 0-9 or 0,1,2")
        else:
            items.append(part)  # a folder dataset's class name
    if not items:
        raise SweepError(f"no {what} given; use e.g. 0-9 or 0,1,2")
    seen: list = []
    for item in items:
        if item not in seen:
            seen.append(item)
    return seen


def method_needs(method: str, parameters: Mapping[str, Mapping] | None = None) -> tuple[str, ...]:
    """The methods `method` is made from: METHOD_NEEDS, or the value of its NEEDS_PARAMETER in
    `parameters` (per notebook) when that is given (`-p parts rotnet,gradcon`)."""
    notebook, name = NEEDS_PARAMETER.get(method, ("", ""))
    given = (parameters or {}).get(notebook, {}).get(name)
    if given:
        from .scorerule import parse_terms  # (it needs torch; the sweep does not: runs.py)

        return tuple(dict.fromkeys(parse_terms(str(given))))
    return METHOD_NEEDS.get(method, ())


def parse_methods(text: str, parameters: Mapping[str, Mapping] | None = None) -> list[str]:
    """Comma-separated method names, each one of METHOD_NOTEBOOKS, listed with the methods they
    are made from (`parameters`: the values given per notebook, for method_needs)."""
    methods = parse_list(text, "method", integers=False)
    unknown = [m for m in methods if m not in METHOD_NOTEBOOKS]
    if unknown:
        raise SweepError(f"unknown method {', '.join(map(str, unknown))}; use any of: "
                         f"{', '.join(METHOD_NOTEBOOKS)}")
    for method in methods:
        needs = method_needs(method, parameters)
        unknown = [m for m in needs if m not in METHOD_NOTEBOOKS or m == method]
        if unknown:
            raise SweepError(f"{method} cannot be made from {', '.join(unknown)}; its parts are "
                             f"methods of the sweep: {', '.join(METHOD_NOTEBOOKS)}")
        absent = [m for m in needs if m not in methods]
        if absent:
            raise SweepError(f"{method} is made from {' and '.join(needs)}: list "
                             f"{', '.join(absent)} too, e.g. --methods "
                             f"{','.join(dict.fromkeys((*methods, *absent)))} (finished runs of "
                             f"them are skipped)")
    return methods


# ---------------------------------------------------------------------------------------------
# Runs


@dataclass(frozen=True)
class SweepRun:
    """One (class, seed) of the sweep and its run folder."""

    dataset: str
    normal_class: int | str
    seed: int
    folder: Path

    @property
    def name(self) -> str:
        return f"class {self.normal_class} seed {self.seed}"


def plan_runs(dataset: str, classes: Sequence, seeds: Sequence[int], out: Path) -> list[SweepRun]:
    """One run folder per (class, seed): out/<dataset>/class<c>_seed<s>/."""
    return [SweepRun(dataset, c, s, out / dataset / f"class{c}_seed{s}")
            for c in classes for s in seeds]


def runs_on_disk(dataset: str, out: Path) -> list[tuple[int | str, int]]:
    """The (class, seed) of every run folder out/<dataset>/class<c>_seed<s>/ whose metrics.json
    belongs to it, whichever sweep made it."""
    found = []
    for folder in sorted((out / dataset).glob("class*_seed*")):
        data = read_metrics(Run(folder))
        if not data or "normal_class" not in data or "seed" not in data:
            continue
        run = SweepRun(dataset, data["normal_class"], int(data["seed"]), folder)
        if split_matches(run, data) and plan_runs(dataset, [run.normal_class], [run.seed],
                                                  out)[0].folder == folder:
            found.append((run.normal_class, run.seed))
    return found


def split_matches(run: SweepRun, data: dict) -> bool:
    """Whether a metrics.json dict belongs to this run's (dataset, class, seed)."""
    return (data.get("dataset") == run.dataset and str(data.get("normal_class")) ==
            str(run.normal_class) and data.get("seed") == run.seed)


def comparable(params: dict) -> dict:
    """Notebook parameters as recorded (JSON types), without the ones that do not change a result
    (RECORD_IGNORES)."""
    return {k: v for k, v in json.loads(json.dumps(params)).items() if k not in RECORD_IGNORES}


def effective(passed: dict, defaults: Mapping | None) -> dict:
    """The comparable values a notebook runs with: its parameters cell's defaults, overridden by
    the values passed to it."""
    return comparable({**(defaults or {}), **passed})


def _compared(data: dict, stem: str, requested: dict[str, dict],
              defaults: Mapping[str, dict] | None) -> tuple[dict, dict]:
    """(recorded, requested) values of one notebook, as completely as the record allows: every
    value when the run recorded its notebook's defaults (so a changed default re-runs it), else
    the passed values only (a record from before defaults were recorded)."""
    recorded_defaults = data.get("defaults", {}).get(stem)
    passed = data["parameters"][stem]
    if recorded_defaults is None or defaults is None:
        return comparable(passed), comparable(requested[stem])
    # a parameter the notebook did not have then (added since, not passed now) is taken to
    # default to what the run did: adding a parameter does not make every run stale
    known = {*recorded_defaults, *passed, *requested[stem]}
    now = {k: v for k, v in (defaults.get(stem) or {}).items() if k in known}
    return effective(passed, recorded_defaults), effective(requested[stem], now)


def recorded_entries(data: dict, method: str) -> list[dict]:
    """The method's entries in a metrics.json dict (METHOD_ENTRIES)."""
    return [e for name, e in data.get("methods", {}).items() if name in METHOD_ENTRIES[method]]


def method_status(data: dict, run: SweepRun, method: str, requested: dict[str, dict],
                  defaults: Mapping[str, dict] | None = None) -> str:
    """"missing" (no entry; one whose notebooks' parameters are not all recorded: its run was
    interrupted, or made before runs recorded them; one without development figures),
    "different" (made with other parameters than `requested`, the resolved parameters per
    notebook, over `defaults`, each notebook's parameters-cell defaults now) or "same"."""
    entries = recorded_entries(data, method)
    if not split_matches(run, data) or not entries or any("dev" not in e for e in entries):
        return "missing"  # (an entry without development figures predates them)
    recorded = data.get("parameters", {})
    stems = (DATA_PREP, *METHOD_NOTEBOOKS[method])
    if any(stem not in recorded for stem in stems):
        return "missing"
    same = all(a == b for a, b in (_compared(data, stem, requested, defaults) for stem in stems))
    return "same" if same else "different"


def parameter_changes(data: dict, method: str, requested: dict[str, dict],
                      defaults: Mapping[str, dict] | None = None) -> str:
    """What differs between a method's recorded and requested parameters, for results.md."""
    changes = []
    for stem in (DATA_PREP, *METHOD_NOTEBOOKS[method]):
        old, new = _compared(data, stem, requested, defaults)
        changes += [f"{k} {old.get(k, 'default')} (requested {new.get(k, 'default')})"
                    for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return ", ".join(dict.fromkeys(changes))


def reload_finished_training(data: dict, notebooks: Sequence[str], requested: dict[str, dict],
                             defaults: Mapping[str, dict] | None) -> dict[str, dict]:
    """`requested` with `resume: true` for each training notebook (one whose parameters cell
    has `resume`) that this run finished with the requested values: it reloads that training
    instead of doing it again, e.g. a GAN whose latent mapping was interrupted. A `resume`
    passed explicitly is kept."""
    planned = dict(requested)
    for stem in notebooks:
        if ("resume" in (defaults or {}).get(stem, {}) and "resume" not in requested[stem]
                and stem in data.get("parameters", {})):
            recorded, now = _compared(data, stem, requested, defaults)
            if recorded == now:
                planned[stem] = {**requested[stem], "resume": True}
    return planned


def scores_time(run: SweepRun, method: str) -> float | None:
    """When the run folder's saved scores of the method were last written; None when it has
    none (a fresh clone of committed results has metrics.json only)."""
    files = [Run(run.folder).scores / f"{entry}.npz" for entry in METHOD_ENTRIES[method]]
    times = [f.stat().st_mtime for f in files if f.is_file()]
    return max(times) if times else None


def scores_on_disk(run: SweepRun, method: str) -> bool:
    """Whether the run folder still holds the method's saved scores (a method made from them
    must otherwise run them again)."""
    return scores_time(run, method) is not None


def made_time(data: dict, run: SweepRun, method: str) -> float | None:
    """When the method was last made: the `made` stamps of its metrics entries, which every
    clone has; for entries made before they were stamped, when its saved scores were written
    (None: neither is there)."""
    entries = recorded_entries(data, method)
    if entries and all("made" in e for e in entries):
        return max(datetime.fromisoformat(e["made"]).timestamp() for e in entries)
    return scores_time(run, method)


def made_before_its_parts(data: dict, run: SweepRun, method: str, parts: Sequence[str]) -> bool:
    """Whether `method` was made before one of the methods it is made from (or is not there
    beside them): a part made again by a sweep that stopped before the method's own notebook,
    whose entry still mixes the part's old scores."""
    own = made_time(data, run, method)
    return any((t := made_time(data, run, part)) is not None and (own is None or t > own)
               for part in parts)


def notebooks_for(methods: Sequence[str]) -> list[str]:
    """00_data_prep, then the notebooks of the given methods in the guidebook's order."""
    names = {DATA_PREP} | {nb for m in methods for nb in METHOD_NOTEBOOKS[m]}
    return sorted(names)


@dataclass
class SweepOutcome:
    """What a sweep did: runs skipped / re-run / run, the failures, the runs kept with other
    parameters (--keep-different: {(class, seed, metrics entry): what differs})."""

    skipped: int = 0
    rerun: int = 0
    run: int = 0
    failures: dict[str, str] = field(default_factory=dict)
    kept_different: dict[tuple[str, int, str], str] = field(default_factory=dict)
    interrupted: bool = False

    def summary(self, total: int) -> str:
        kept = len({(c, s) for c, s, _ in self.kept_different})
        why = f"finished; {kept} with other parameters, kept" if kept else \
            "finished with these parameters"
        return (f"{total} runs: {self.skipped} skipped ({why}), {self.rerun} re-run (made with "
                f"other parameters), {self.run} run")


def plan_tasks(runs: Sequence[SweepRun], methods: Sequence[str],
               plan: Callable[[SweepRun], dict[str, dict]], *, keep_different: bool = False,
               defaults: Mapping[str, dict] | None = None) -> tuple[list[Task], SweepOutcome]:
    """The task of each run that has work left, with its parameters file written. A chosen
    method that is missing runs; one made with other parameters runs again (its entry replaced
    when it finishes) unless `keep_different`, which keeps it and records it for results.md.
    `plan` gives a run's resolved parameters per notebook, `defaults` each notebook's
    parameters-cell defaults."""
    tasks, outcome = [], SweepOutcome()
    for run in runs:
        requested = plan(run)
        data = read_metrics(Run(run.folder))
        status = {m: method_status(data, run, m, requested, defaults) for m in methods}
        todo = [m for m in methods if status[m] == "missing"
                or (status[m] == "different" and not keep_different)]
        needs = {m: method_needs(m, requested) for m in methods}
        todo += [m for m in methods if m not in todo  # made from a method that runs again
                 and (any(need in todo for need in needs[m])  # or ran since
                      or made_before_its_parts(data, run, m, needs[m]))]
        todo += [need for need in methods if need not in todo  # a part whose scores are gone
                 and any(need in needs[m] for m in todo)
                 and not scores_on_disk(run, need)]
        for m in methods:
            if status[m] == "different" and keep_different:
                for entry in set(data["methods"]) & set(METHOD_ENTRIES[m]):
                    outcome.kept_different[(str(run.normal_class), run.seed, entry)] = \
                        parameter_changes(data, m, requested, defaults)
        if not todo:
            outcome.skipped += 1
            continue
        if any(status[m] == "different" for m in todo):
            outcome.rerun += 1
        else:
            outcome.run += 1
        notebooks = notebooks_for(todo)
        planned = reload_finished_training(data, notebooks, requested, defaults)
        params_file = run.folder / "sweep-parameters.yaml"
        with atomic_path(params_file) as tmp:
            tmp.write_text(yaml.safe_dump({"notebooks": {nb: planned[nb] for nb in notebooks}},
                                          sort_keys=False))
        tasks.append(Task(run.name, run.folder, (*notebooks, "-f", str(params_file),
                                                 "--out", str(run.folder))))
    return tasks, outcome


def sweep(dataset: str, classes: Sequence, seeds: Sequence[int], methods: Sequence[str], out: Path,
          *, plan: Callable[[SweepRun], dict[str, dict]],
          engine: Callable[[Sequence[Task]], Iterator[Outcome]] = run_local,
          keep_different: bool = False, defaults: Mapping[str, dict] | None = None,
          echo=print) -> SweepOutcome:
    """Run every (class, seed) whose chosen methods are missing or were made with other
    parameters, on `engine` (engines.run_local or a bound engines.run_ray). A failing run is
    reported in one line and the others go on; Ctrl-C stops the engine's runs and returns
    (outcome.interrupted) with the finished ones intact."""
    runs = plan_runs(dataset, classes, seeds, out)
    tasks, outcome = plan_tasks(runs, methods, plan, keep_different=keep_different,
                                defaults=defaults)
    echo(f"sweep: {outcome.summary(len(runs))}")
    bar = progress(total=len(runs), initial=len(runs) - len(tasks), desc="sweep", unit="run")
    with bar, closing(engine(tasks)) as results:
        try:
            for task, error in results:
                if error:
                    outcome.failures[task.name] = error
                    bar.write(f"sweep: {dataset} {task.name} failed: {error}", file=sys.stderr)
                bar.update(1)
        except KeyboardInterrupt:
            outcome.interrupted = True
    return outcome
