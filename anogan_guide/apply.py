"""`anogan-guide score` and `anogan-guide export`: a trained detector on files from disk.

    anogan-guide score RUN_DIR|detector.pt IMAGES... [--method M] [--out scores.csv]
                       [--maps DIR] [--batch-size N] [--workers N] [--device D]
    anogan-guide export RUN_DIR [--method M] --out detector.pt

`score` streams the images through a torch DataLoader (decoded in worker processes, a batch at a
time: memory stays flat whatever the number of files), writes one CSV row per image as it goes
(into a temporary file renamed at the end, so a failed run leaves no partial CSV), optionally one
overlay PNG per image, and prints a summary. An unreadable file is named in one line and skipped;
the exit status is then 1.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from .runs import atomic_path, progress

if TYPE_CHECKING:  # the detector (and torch) load when a command scores: runs.py says why
    from .detector import Detector

CSV_COLUMNS = ("path", "score", "threshold", "anomalous", "normal_percentile")


class ScoreError(RuntimeError):
    """Nothing could be scored (no images, an unknown method, ...): one line, exit status 1."""


def _err(line: str) -> None:
    print(f"anogan-guide: {line}", file=sys.stderr)


def score_files(detector: Detector, targets: list[str], out: str | Path, *,
                maps: str | Path | None = None, batch_size: int | None = None,
                workers: int = 1) -> int:
    """Score every image `targets` names into the CSV `out`; returns the exit status (0, or 1
    when some file was skipped or some target gave no image)."""
    from .imagefiles import find_images
    from .maps import overlay_name, save_overlay

    files, problems = find_images(targets)
    for line in problems:
        _err(line)
    if not files:
        raise ScoreError("nothing to score: give image files, or folders that hold some")
    if maps is not None and detector.scorer.no_map:
        raise ScoreError(f"--maps: {detector.scorer.no_map}")
    n_scored = n_anomalous = 0
    skipped = []
    bar = progress(total=len(files), desc=f"scoring ({detector.method})", unit="img")
    with atomic_path(out) as tmp, open(tmp, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        stream = detector._stream(files, batch_size=batch_size, workers=workers,
                                  with_maps=maps is not None, on_error="skip")
        for batch, scores, amaps in stream:
            for bad in batch.errors:
                bar.write(f"anogan-guide: {bad.error}", file=sys.stderr)
                skipped.append(bad.name)
            percentiles = detector.percentile(scores.numpy())
            for row, (name, s, p) in enumerate(zip(batch.names, scores.tolist(), percentiles,
                                                   strict=True)):
                anomalous = s > detector.threshold
                writer.writerow([name, f"{s:.9g}", f"{detector.threshold:.9g}", int(anomalous),
                                 f"{p:.2f}"])
                n_anomalous += anomalous
                if amaps is not None:
                    from .detector import to_input_size

                    original = batch.originals[row]
                    save_overlay(Path(maps) / overlay_name(batch.indices[row], name), original,
                                 to_input_size(amaps[row], original), detector.map_scale())
            n_scored += len(batch)
            bar.update(len(batch) + len(batch.errors))
    bar.close()
    where = f"; overlays in {maps}" if maps is not None else ""
    print(f"{detector.method}: {n_scored} images scored, {n_anomalous} anomalous at the threshold "
          f"{detector.threshold:.6g} (5% of the run's validation normals score above it)"
          + (f"; {len(skipped)} skipped" if skipped else "") + f"; scores in {out}{where}")
    return 1 if skipped or problems else 0


def cmd_score(args) -> int:
    detector = load(args.detector, args.method, args.device)
    if args.workers < 0 or (args.batch_size is not None and args.batch_size < 1):
        raise ScoreError("--batch-size must be at least 1 and --workers at least 0")
    return score_files(detector, args.images, args.out, maps=args.maps,
                       batch_size=args.batch_size, workers=args.workers)


def cmd_export(args) -> int:
    if not Path(args.run).is_dir():
        raise ScoreError(f"{args.run} is not a run folder; give the folder a run wrote "
                         f"(e.g. runs/demo)")
    detector = load(args.run, args.method, "cpu")
    path = detector.export(args.out)
    print(f"{detector.method} detector of {args.run} written to {path} "
          f"({path.stat().st_size / 1e6:.1f} MB); score with: anogan-guide score {path} IMAGES")
    return 0


def load(source: str, method: str | None, device: str) -> Detector:
    from .detector import Detector, DetectorError

    try:
        return Detector.load(source, method, device=device)
    except KeyError as err:
        raise ScoreError(err.args[0]) from None
    except (DetectorError, FileNotFoundError, ValueError) as err:
        raise ScoreError(str(err)) from None


def add_parsers(sub) -> None:
    """The `score` and `export` subcommands of the anogan-guide parser."""
    sc = sub.add_parser("score", help="score image files with a trained detector (CSV, maps)")
    sc.add_argument("detector", help="a run folder or a detector file from anogan-guide export")
    sc.add_argument("images", nargs="+", help="image files and folders (searched recursively)")
    sc.add_argument("--method", help="the run's method (default: the best development AUROC)")
    sc.add_argument("--out", default="scores.csv", help="the CSV to write (default scores.csv)")
    sc.add_argument("--maps", metavar="DIR", help="also save one overlay PNG per image here")
    sc.add_argument("--batch-size", type=int, help="images per batch (default: the method's "
                    "own scoring batch, which reproduces the run's scores exactly)")
    sc.add_argument("--workers", type=int, default=1, help="processes decoding images "
                    "(default 1; 0: decode in this one)")
    sc.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    sc.set_defaults(func=cmd_score)
    ex = sub.add_parser("export", help="write a run's detector to one file for score")
    ex.add_argument("run", help="the run folder")
    ex.add_argument("--method", help="the method (default: the best development AUROC)")
    ex.add_argument("--out", required=True, help="the detector file to write, e.g. detector.pt")
    ex.set_defaults(func=cmd_export)


__all__ = ["CSV_COLUMNS", "ScoreError", "add_parsers", "cmd_export", "cmd_score", "score_files"]
