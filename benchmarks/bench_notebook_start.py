"""What starting a notebook run costs, with the pinned jsonschema and with a newer one, side by side.

    pip install --no-deps --target /tmp/js-new jsonschema==4.26.0 rfc3987-syntax lark
    python benchmarks/bench_notebook_start.py --newer /tmp/js-new

Every `anogan-guide run`, sweep job, nbval session and book build reads notebooks with nbformat,
which imports jsonschema. From 4.24 jsonschema imports rfc3987-syntax when it is installed (the
`format-nongpl` extra that jupyter-events asks for installs it), and that package builds an Earley
parser at import. pyproject.toml pins jsonschema 4.23.0. This runs a two-cell notebook with
`anogan-guide run` `--rounds` times each way, interleaved (pinned, newer, pinned, ...), the newer
jsonschema put first on PYTHONPATH, and prints the median wall and CPU seconds of each whole
process (kernel included) and their ratio.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nbformat


def _notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("run_dir: str = ''", metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print('done')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def _timed(command: list[str], env: dict) -> tuple[float, float]:
    """(wall, CPU of the process and its children) of one run."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, env=env, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--newer", required=True, type=Path,
                        help="folder holding a jsonschema >= 4.24 and rfc3987-syntax (pip --target)")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    if not (args.newer / "jsonschema").is_dir() or not (args.newer / "rfc3987_syntax").is_dir():
        sys.exit(f"{args.newer} holds no jsonschema and rfc3987_syntax: pip install --no-deps "
                 f"--target {args.newer} jsonschema==4.26.0 rfc3987-syntax lark")
    with tempfile.TemporaryDirectory() as tmp:
        notebook = _notebook(Path(tmp) / "90_start.ipynb")
        command = [sys.executable, "-m", "anogan_guide.cli", "run", str(notebook),
                   "--out", str(Path(tmp) / "run")]
        pinned = dict(os.environ, ANOGAN_GUIDE_QUIET="1")
        newer = dict(pinned, PYTHONPATH=os.pathsep.join(
            [str(args.newer.resolve())] + [p for p in [os.environ.get("PYTHONPATH")] if p]))
        _timed(command, pinned)  # warm the file cache
        times = {"pinned": [], "newer": []}
        for _ in range(args.rounds):
            for name, env in (("pinned", pinned), ("newer", newer)):
                times[name].append(_timed(command, env))
    print(f"`anogan-guide run` of a two-cell notebook, {args.rounds} rounds interleaved, medians:")
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v))
           for k, v in times.items()}
    for name, (wall, cpu) in med.items():
        print(f"  jsonschema {name:6s}: wall {wall:5.2f} s  CPU {cpu:5.2f} s")
    print(f"  pinned / newer: wall {med['pinned'][0] / med['newer'][0]:.2f}, "
          f"CPU {med['pinned'][1] / med['newer'][1]:.2f}")


if __name__ == "__main__":
    main()
