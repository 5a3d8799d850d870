"""`anogan-guide compare`: is a re-made row of a results table the committed one?

    anogan-guide compare NEW_SWEEP_DIR results/cifar10 [--tolerance 0.01] [--methods rotnet]

Reproducing a table row means running the README's sweep command for one class and seed into
a new folder, then comparing each of its run folders (NEW/<dataset>/class<c>_seed<s>/) with the
committed run folder of the same name: the test and development AUROC of every method both
recorded, and whether the two runs were made with the same parameters (a different parameter is
said, since then the figures need not agree). It prints one line per (run, method) and a
verdict; the exit status is 0 when every compared figure is within the tolerance, 1 when one is
not, 2 when nothing could be compared (no run folder of the new sweep has a committed twin).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

from .evaluate import read_metrics
from .runs import Run
from .sweep import DATA_PREP, METHOD_ENTRIES, METHOD_NOTEBOOKS, RECORD_IGNORES

TOLERANCE = 0.01  # AUROC: what "reproduced" means in the README (one thread, another machine)


@dataclass(frozen=True)
class Comparison:
    """One method of one run: the new and committed test / development AUROC and what differs
    in the parameters the two recorded."""

    run: str
    method: str
    new: float
    committed: float
    new_dev: float | None
    committed_dev: float | None
    parameters_differ: str

    @property
    def difference(self) -> float:
        diffs = [abs(self.new - self.committed)]
        if self.new_dev is not None and self.committed_dev is not None:
            diffs.append(abs(self.new_dev - self.committed_dev))
        return max(diffs)

    def line(self, tolerance: float) -> str:
        dev = (f"; dev {self.new_dev:.4f} vs {self.committed_dev:.4f}"
               if self.new_dev is not None and self.committed_dev is not None else "")
        verdict = "ok" if self.difference <= tolerance else f"DIFFERS by {self.difference:.4f}"
        why = f" (parameters differ: {self.parameters_differ})" if self.parameters_differ else ""
        return (f"{self.run} {self.method}: test AUROC {self.new:.4f} vs committed "
                f"{self.committed:.4f}{dev}: {verdict}{why}")


def _notebooks_of(entry: str) -> tuple[str, ...]:
    method = next((m for m, entries in METHOD_ENTRIES.items() if entry in entries), entry)
    return (DATA_PREP, *METHOD_NOTEBOOKS.get(method, ()))


def _parameter_differences(new: dict, committed: dict, entry: str) -> str:
    """The recorded notebook parameters of the entry's notebooks that differ (where-to-find
    values such as data_root and run_dir, and resume, do not count)."""
    out = []
    for stem in _notebooks_of(entry):
        a = new.get("parameters", {}).get(stem, {})
        b = committed.get("parameters", {}).get(stem, {})
        out += [f"{stem} {k} {b.get(k, 'unset')} -> {a.get(k, 'unset')}"
                for k in sorted(set(a) | set(b)) if k not in RECORD_IGNORES and a.get(k) != b.get(k)]
    return ", ".join(out)


def compare(new_dir: Path, committed_dir: Path, methods: list[str] | None = None
            ) -> list[Comparison]:
    """Every method entry recorded by both a run folder of `new_dir` and its committed twin."""
    out = []
    for metrics in sorted(Path(new_dir).glob("*/class*_seed*/metrics.json")):
        folder = metrics.parent
        twin = Path(committed_dir) / folder.parent.name / folder.name
        if not (twin / "metrics.json").is_file():
            continue
        new, old = read_metrics(Run(folder)), read_metrics(Run(twin))
        for entry, e in new.get("methods", {}).items():
            o = old.get("methods", {}).get(entry)
            if o is None or (methods and not any(entry in METHOD_ENTRIES.get(m, (m,))
                                                 for m in methods)):
                continue
            out.append(Comparison(f"{folder.parent.name}/{folder.name}", entry, e["auroc"],
                                  o["auroc"], e.get("dev", {}).get("auroc"),
                                  o.get("dev", {}).get("auroc"),
                                  _parameter_differences(new, old, entry)))
    return out


def cmd_compare(args: argparse.Namespace) -> int:
    methods = [m.strip() for m in args.methods.split(",") if m.strip()] if args.methods else None
    found = compare(Path(args.new), Path(args.committed), methods)
    if not found:
        print(f"anogan-guide compare: no run folder of {args.new} has a committed twin with the "
              f"same methods in {args.committed}; give the sweep folder (the --out of the "
              f"sweep) and e.g. results/cifar10")
        return 2
    for c in found:
        print(c.line(args.tolerance))
    bad = [c for c in found if c.difference > args.tolerance]
    print(f"{len(found) - len(bad)} of {len(found)} within {args.tolerance:g} AUROC of the "
          f"committed figures")
    return 1 if bad else 0


def add_parser(sub) -> None:
    """The `compare` subcommand of the anogan-guide parser."""
    cp = sub.add_parser("compare", help="compare a re-made sweep's figures with committed ones")
    cp.add_argument("new", help="the new sweep folder (the --out of the sweep you ran)")
    cp.add_argument("committed", help="the committed sweep folder, e.g. results/cifar10")
    cp.add_argument("--tolerance", type=float, default=TOLERANCE,
                    help=f"largest AUROC difference that counts as reproduced (default {TOLERANCE})")
    cp.add_argument("--methods", help="only these methods, comma-separated (default: all both have)")
    cp.set_defaults(func=cmd_compare)
