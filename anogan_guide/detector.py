"""A trained detector applied to new images: scores, decisions, anomaly maps, and one file to take
it elsewhere.

    detector = ag.Detector.load("runs/demo")                 # the best method on development data
    result = detector.score("new_images/")                   # paths, folders, PIL, arrays, tensors
    result.score, result.threshold, result.anomalous, result.normal_percentile
    maps = detector.anomaly_map(images)                      # one (H, W) map per image
    detector.export("detector.pt"); ag.Detector.load("detector.pt")

Images are prepared as the run's split prepared its own (`imagefiles`), each method scores them as
its notebook did (`scorers`, `method_scorers`), and the threshold is the run's: the 95th
percentile of the validation normals' scores (metrics.json). Nothing here reads a test image.

The detector file (`detectorfile`): one weights_only-safe torch file with everything scoring needs.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .detectorfile import (
    DETECTOR_VERSION,
    MAP_SCALE,
    DetectorError,
    build_payload,
    read_detector_file,
    unpack,
    write_detector_file,
)
from .imagefiles import Batch, batches, gather
from .runs import Run, pick_device
from .scorers import Images, NoMap, RunSource, Scorer, build, entry_for, registry

# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class Scores:
    """Per image: its name (path, or "image i"), score, decision at the run's threshold and
    `normal_percentile`, the share (in %) of the run's validation normals that score lower."""

    method: str
    names: list[str]
    score: np.ndarray
    threshold: float
    normal_percentile: np.ndarray
    skipped: list[str] = field(default_factory=list)  # one line per image that was not scored

    @property
    def anomalous(self) -> np.ndarray:
        return self.score > self.threshold

    def __len__(self) -> int:
        return len(self.names)

    def rows(self) -> list[dict]:
        return [{"path": n, "score": float(s), "threshold": self.threshold, "anomalous": bool(a),
                 "normal_percentile": float(p)} for n, s, a, p in
                zip(self.names, self.score, self.anomalous, self.normal_percentile, strict=True)]

    def most_anomalous(self, n: int | None = None) -> list[int]:
        """Indices of the images, highest score first."""
        return [int(i) for i in np.argsort(-self.score, kind="stable")[:n]]

    def summary(self) -> str:
        return (f"{self.method}: {len(self)} images scored, {int(self.anomalous.sum())} anomalous "
                f"at the threshold {self.threshold:.6g}"
                + (f"; {len(self.skipped)} skipped" if self.skipped else ""))

    def markdown(self, n: int | None = None) -> str:
        rows = ["| image | score | anomalous | validation normals below |", "|---|---|---|---|"]
        for i in self.most_anomalous(n):
            rows.append(f"| {Path(self.names[i]).name} | {self.score[i]:.4g} | "
                        f"{'yes' if self.anomalous[i] else 'no'} | "
                        f"{self.normal_percentile[i]:.0f}% |")
        return "\n".join(rows)


# ---------------------------------------------------------------------------------------------


class Detector:
    """One method of a trained run, ready for new images (see the module's docstring)."""

    def __init__(self, scorer: Scorer, threshold: float, val_scores: np.ndarray, *, source: str,
                 payload: dict, device: torch.device) -> None:
        self.scorer, self.threshold, self.source = scorer, float(threshold), source
        self.val_scores = np.sort(np.asarray(val_scores, dtype=np.float64))
        self.device = device
        self._payload = payload  # what export writes (built lazily for a run folder)
        self._payload_source: RunSource | None = None
        self._map_scale: list | None = None
        self._said: set[str] = set()

    @property
    def method(self) -> str:
        return self.scorer.method

    @property
    def image_size(self) -> int:
        return self.scorer.views[0].image_size

    @property
    def channels(self) -> int:
        return self.scorer.views[0].channels

    @property
    def map_note(self) -> str:
        return self.scorer.no_map or self.scorer.map_note

    def __repr__(self) -> str:
        return (f"Detector({self.method} from {self.source}: {self.image_size}x{self.image_size}"
                f"x{self.channels}, threshold {self.threshold:.6g})")

    # -----------------------------------------------------------------------------------------
    # loading

    @classmethod
    def load(cls, source: str | Path, method: str | None = None, *, device: str = "auto",
             verbose: bool = True, split=None) -> Detector:
        """A detector from a run folder (any of its methods; without `method`, the one with
        the best development AUROC) or from a file written by `export`."""
        path = Path(source).expanduser()
        dev = pick_device(device)
        if path.is_dir():
            return cls._from_run(RunSource(Run(path.resolve()), split=split), method, dev,
                                 verbose)
        if path.is_file():
            return cls._from_file(path, method, dev)
        raise FileNotFoundError(f"{path} does not exist; give a run folder (e.g. runs/demo) or a "
                                f"detector file from anogan-guide export")

    @classmethod
    def _from_run(cls, source: RunSource, method: str | None, device: torch.device,
                  verbose: bool, payload: dict | None = None, origin: str = "") -> Detector:
        if method is None:
            method = best_method(source, verbose=verbose)
        source.entry(method)  # names the methods the run has when it lacks this one
        try:
            entry_for(method)
        except KeyError as err:
            raise DetectorError(err.args[0]) from None
        scorer = build(source, method, device)
        threshold = source.entry(method)["threshold"]
        detector = cls(scorer, threshold, source.val_scores(method),
                       source=origin or str(source.run.root), payload=payload or {},
                       device=device)
        if payload is None:
            detector._payload_source = source
        return detector

    @classmethod
    def _from_file(cls, path: Path, method: str | None, device: torch.device) -> Detector:
        payload = read_detector_file(path)
        if method is not None and method != payload["method"]:
            raise DetectorError(f"{path} holds a {payload['method']} detector, not {method}; "
                                f"export {method} from its run folder")
        with tempfile.TemporaryDirectory(prefix="anogan-detector-") as tmp:
            run = unpack(payload, Path(tmp))
            return cls._from_run(RunSource(run, extras=payload["extras"]), payload["method"],
                                 device, False, payload=payload, origin=str(path))

    # -----------------------------------------------------------------------------------------
    # scoring

    def _stream(self, images, *, batch_size: int | None, workers: int, with_maps: bool,
                on_error: str) -> Iterator[tuple[Batch, torch.Tensor, torch.Tensor | None]]:
        if with_maps and self.scorer.no_map:
            raise NoMap(self.scorer.no_map)
        dataset, problems = gather(images, self.scorer.views, keep_original=with_maps)
        for line in problems:
            if on_error == "raise" or len(dataset) == 0:
                raise FileNotFoundError(line)
            self._say(line, line)
        if len(dataset) == 0:
            raise ValueError("no images to score; give image files, folders, PIL images, arrays "
                             "or tensors")
        offset = 0
        for batch in batches(dataset, batch_size or self.scorer.batch_size, workers):
            for bad in batch.errors:
                if on_error == "raise":
                    raise ValueError(bad.error.removesuffix("; skipped") + "; remove or replace "
                                     "the file")
            self._note_channels(batch)
            if len(batch) == 0:
                yield batch, torch.zeros(0, dtype=torch.float64), None
                continue
            scores, maps = self.scorer.run(Images(batch.views, offset, self.device), with_maps)
            offset += len(batch)
            yield batch, scores, maps

    def _say(self, key: str, line: str) -> None:
        if key not in self._said:
            self._said.add(key)
            print(line)

    def _note_channels(self, batch: Batch) -> None:
        for name, c in zip(batch.names, batch.channels, strict=True):
            if c and c != self.channels:
                to = "gray (PIL's luma)" if self.channels == 1 else "RGB (gray repeated)"
                self._say("channels", f"note: {name} has {c} channels, the run's images "
                                      f"{self.channels}: converted to {to} as the split converts "
                                      f"its files (said once)")
                return

    def percentile(self, scores) -> np.ndarray:
        """The share (in %) of the validation normals that score lower than each score."""
        scores = np.asarray(scores, dtype=np.float64)
        return 100.0 * np.searchsorted(self.val_scores, scores, side="left") / len(self.val_scores)

    def score(self, images, *, batch_size: int | None = None, workers: int = 0,
              on_error: str = "raise") -> Scores:
        """Score images (see `imagefiles.gather` for what `images` may be). on_error="skip":
        an unreadable file is named in `Scores.skipped` instead of raising."""
        names, values, skipped = [], [], []
        for batch, scores, _ in self._stream(images, batch_size=batch_size, workers=workers,
                                             with_maps=False, on_error=on_error):
            names += batch.names
            values.append(scores.numpy())
            skipped += [bad.error for bad in batch.errors]
        score = np.concatenate(values) if values else np.zeros(0)
        return Scores(self.method, names, score, self.threshold, self.percentile(score),
                      skipped)

    def anomaly_map(self, images, *, batch_size: int | None = None) -> list[torch.Tensor]:
        """One (H, W) map per image at the image's own size (the network's map resized
        bilinearly); higher = more anomalous there. Raises NoMap for a method without one."""
        out = []
        for batch, _, maps in self._stream(images, batch_size=batch_size, workers=0,
                                           with_maps=True, on_error="raise"):
            out += [to_input_size(m, o) for m, o in zip(maps, batch.originals, strict=True)]
        return out

    def overlays(self, images, *, batch_size: int | None = None) -> list[torch.Tensor]:
        """One overlay per image (`maps.overlay`: uint8 RGB, the image beside the image under
        its map, one colour scale for all), e.g. for `maps.overlay_grid`."""
        from .maps import overlay

        out = []
        for batch, _, maps in self._stream(images, batch_size=batch_size, workers=0,
                                           with_maps=True, on_error="raise"):
            out += [overlay(o, to_input_size(m, o), self.map_scale())
                    for m, o in zip(maps, batch.originals, strict=True)]
        return out

    def save_overlays(self, images, folder: str | Path, *, batch_size: int | None = None,
                      workers: int = 0, on_error: str = "raise") -> tuple[Scores, list[Path]]:
        """Score `images` and save one overlay PNG each into `folder` (`maps.overlay`: the image
        beside the image under its map, one colour scale for all, `map_scale`); returns the
        scores and the paths."""
        from .maps import overlay_name, save_overlay

        names, values, skipped, paths = [], [], [], []
        for batch, scores, maps in self._stream(images, batch_size=batch_size, workers=workers,
                                                with_maps=True, on_error=on_error):
            for i, name, m, o in zip(batch.indices, batch.names, maps, batch.originals,
                                     strict=True):
                path = Path(folder) / overlay_name(i, name)
                paths.append(save_overlay(path, o, to_input_size(m, o), self.map_scale()))
            names += batch.names
            values.append(scores.numpy())
            skipped += [bad.error for bad in batch.errors]
        score = np.concatenate(values) if values else np.zeros(0)
        return Scores(self.method, names, score, self.threshold, self.percentile(score),
                      skipped), paths

    def map_scale(self) -> float | None:
        """The colour scale of the overlays: the 99th percentile of the map over every pixel of
        the run's validation normals (so a normal image looks cool, whatever the method's units).
        None where those images cannot be read (the overlays then scale each map by its own
        maximum, said once)."""
        if self._map_scale is None:
            extras = self._payload.get("extras", {}) if self._payload else {}
            if MAP_SCALE in extras:
                self._map_scale = [float(extras[MAP_SCALE])]
            else:
                try:
                    self._map_scale = [validation_map_quantile(self, self._payload_source)]
                except (OSError, ValueError, KeyError, AttributeError) as err:
                    self._say("scale", f"note: no validation normals to scale the maps by "
                                       f"({str(err).splitlines()[0][:120]}); each overlay is "
                                       f"scaled by its own maximum")
                    self._map_scale = [None]
        return self._map_scale[0]

    # -----------------------------------------------------------------------------------------
    # export

    def export(self, path: str | Path) -> Path:
        """Write one file holding everything `score` needs; `Detector.load(path)` reads it."""
        payload = self._payload or build_payload(self._payload_source, self.method, self.scorer)
        if not self._payload and not self.scorer.no_map:
            scale = self.map_scale()
            if scale is not None:
                payload["extras"][MAP_SCALE] = torch.tensor(scale, dtype=torch.float64)
        write_detector_file(path, payload)
        return Path(path)


def best_method(source: RunSource, *, verbose: bool = True) -> str:
    """The run's method with the best development AUROC (metrics.json's `dev`; never test)
    among those a detector can be made of."""
    scored = {m: (e.get("dev") or {}).get("auroc") for m, e in source.metrics.get("methods",
                                                                                 {}).items()}
    entries = registry()
    known = {m: v for m, v in scored.items() if m in entries}
    candidates = {m: v for m, v in known.items() if v is not None}
    if not candidates:
        have = ", ".join(known) or "none"
        raise DetectorError(f"{source.run.root} has no development AUROC to choose a method by "
                            f"(its split has no other classes); name one with method= / --method "
                            f"({have})")
    best = max(candidates, key=lambda m: candidates[m])
    if verbose:
        others = ", ".join(f"{m} {v:.3f}" for m, v in sorted(candidates.items(),
                                                             key=lambda kv: -kv[1]) if m != best)
        print(f"method {best}: the best development AUROC of {source.run.root.name} "
              f"({candidates[best]:.3f}; {others})")
    return best


def validation_map_quantile(detector: Detector, source: RunSource | None,
                            q: float = 0.99) -> float:
    """The q quantile of the detector's map over all pixels of the run's validation normals."""
    if source is None:
        raise ValueError("the detector file carries no map scale")
    views = detector.scorer.views
    val = {v.key: source.val_images(v) for v in views}
    n, step = len(next(iter(val.values()))), detector.scorer.batch_size
    values = [detector.scorer.run(Images({k: x[s:s + step] for k, x in val.items()}, s,
                                         detector.device), True)[1].flatten().numpy()
              for s in range(0, n, step)]
    return float(np.quantile(np.concatenate(values), q))


def to_input_size(amap: torch.Tensor, original: torch.Tensor | None) -> torch.Tensor:
    """A network-resolution map (h, w) resized bilinearly to the original image's (H, W)."""
    if original is None or tuple(original.shape[-2:]) == tuple(amap.shape):
        return amap
    return F.interpolate(amap[None, None], size=tuple(original.shape[-2:]), mode="bilinear",
                         align_corners=False)[0, 0]


__all__ = ["DETECTOR_VERSION", "Detector", "DetectorError", "NoMap", "Scores", "best_method",
           "read_detector_file", "to_input_size", "write_detector_file"]
