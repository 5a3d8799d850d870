"""The detector file: one torch file holding everything a detector needs to score, loaded with
torch.load(weights_only=True) on a machine that has only the package.

    {"format": "anogan-guide detector", "version": 1, "sha256": hex, "payload": uint8 tensor}

The payload, serialised on its own (so that its SHA-256 can be checked before it is read):
the method, metrics.json's header and the entries of the method and of its parts (the
parameters each notebook scored with, the threshold), the validation normals' scores, the
checkpoints it loads (without optimiser states, RNG states or loss history) and extras (the
overlays' colour scale, the ensemble's map statistics). Loading lays it out as the run folder it
came from (`unpack`), in a temporary folder, and reads it with the same code as a run folder.
The checksum finds corruption and accidental edits, not a deliberate forgery.
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path

import numpy as np
import torch

from .runs import Run, atomic_path, read_checkpoint
from .scorers import RunSource, Scorer, entry_for

MAP_SCALE = "map_scale"  # in a detector file's extras: the overlays' colour scale
DETECTOR_MAGIC = "anogan-guide detector"
DETECTOR_VERSION = 1


class DetectorError(ValueError):
    """A detector that cannot be loaded (one line naming the problem and the fix)."""


def _involved(source: RunSource, method: str) -> list[str]:
    out = [method]
    for part in entry_for(method).parts(source, method):
        out += [m for m in _involved(source, part) if m not in out]
    return out


def _stripped(checkpoint: dict) -> dict:
    """A checkpoint as scoring needs it: no optimiser states, RNG states or loss history."""
    return {**checkpoint, "optimizers": {}, "rng": {}, "history": {}}


def build_payload(source: RunSource, method: str, scorer: Scorer) -> dict:
    methods = _involved(source, method)
    names = entry_for(method).checkpoints(source, method)
    export_extras = scorer.extras.get("export")
    header = {k: v for k, v in source.metrics.items()
              if k not in ("methods", "parameters", "defaults")}
    return {"method": method, "header": header,
            "entries": {m: source.entry(m) for m in methods},
            "val_scores": {m: torch.as_tensor(source.val_scores(m)) for m in methods},
            "checkpoints": {n: _stripped(read_checkpoint(source.run.model_saves / f"{n}.pt"))
                            for n in names},
            "extras": export_extras() if export_extras else {},
            "origin": str(source.run.root)}


def write_detector_file(path: str | Path, payload: dict) -> None:
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    outer = {"format": DETECTOR_MAGIC, "version": DETECTOR_VERSION,
             "sha256": hashlib.sha256(data).hexdigest(),
             "payload": torch.frombuffer(bytearray(data), dtype=torch.uint8)}
    with atomic_path(path) as tmp:
        torch.save(outer, tmp)


def read_detector_file(path: str | Path) -> dict:
    """The payload of a detector file, loaded with torch.load(weights_only=True), after its
    format, version and checksum were checked."""
    again = "; export it again with anogan-guide export RUN --method M --out FILE"
    try:
        outer = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise DetectorError(f"{path} is not a readable detector file ({type(err).__name__})"
                            f"{again}") from None
    if not isinstance(outer, dict) or outer.get("format") != DETECTOR_MAGIC:
        kind = "a training checkpoint" if isinstance(outer, dict) and "models" in outer else \
            "not an anogan-guide detector file"
        raise DetectorError(f"{path} is {kind}{again}")
    if outer.get("version") != DETECTOR_VERSION:
        raise DetectorError(f"{path} is a detector file of format version {outer.get('version')};"
                            f" this anogan_guide reads version {DETECTOR_VERSION}{again}")
    data = outer["payload"].numpy().tobytes()
    if hashlib.sha256(data).hexdigest() != outer.get("sha256"):
        raise DetectorError(f"{path} was changed after it was exported (its SHA-256 does not "
                            f"match){again}")
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:
        raise DetectorError(f"{path} holds an unreadable payload ({type(err).__name__})"
                            f"{again}") from None


def unpack(payload: dict, folder: Path) -> Run:
    """Lay a payload out as the run folder it came from (the parts scoring reads)."""
    run = Run(folder)
    run.model_saves.mkdir(parents=True)
    run.scores.mkdir()
    for name, checkpoint in payload["checkpoints"].items():
        torch.save(checkpoint, run.model_saves / f"{name}.pt")
    for m, values in payload["val_scores"].items():
        np.savez(run.scores / f"{m}.npz", **{"val/score": values.numpy()})
    run.metrics_path.write_text(json.dumps({**payload["header"], "methods": payload["entries"]}))
    return run


__all__ = ["DETECTOR_MAGIC", "DETECTOR_VERSION", "DetectorError", "MAP_SCALE", "build_payload",
           "read_detector_file", "unpack", "write_detector_file"]
