"""The registry of detectors: how each method of a run folder scores new images (and, if it
reconstructs them, maps where they differ).

A method joins with one entry in its own module, named in METHOD_MODULES (the package imports
its modules when first used, so the registry imports these itself):

    from .scorers import Scorer, register

    @register("rotnet", checkpoints=("rotnet_best",))
    def _detector(source, method, device):
        trained = load(source.run, device)
        view = source.view(METHOD)              # image size and channels of its checkpoint
        return Scorer(method, (view,), lambda batch, maps: (
            score(trained, batch.images(view, VALUE_RANGE))["score"], None),
            no_map="rotnet classifies rotations; it has no per-pixel map")

`source` (RunSource) reads what the run recorded for the method: its metrics.json entry (the
scoring parameters its notebook used), its validation scores, its checkpoints; the function
returns a Scorer whose `run(batch, with_maps)` gives one score per image (as the notebook scored
the same images) and, with_maps, a map per image at the network's resolution. `checkpoints`
names the files an exported detector carries; `parts` the methods it is built from (the
ensemble's). `build` makes a method's Scorer from its entry and applies what every method's
notebook may record the same way (the complexity correction). `anogan_guide.detector` does the
rest: preparing images, thresholds, export.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from .data import ImageSet
from .imagefiles import View
from .runs import Run, read_checkpoint


class NoMap(ValueError):
    """The method has no per-pixel anomaly map (one line saying why)."""


class Images:
    """One batch of prepared images as each network wants it: `images(view, value_range)` is a
    float tensor on the detector's device, converted as the notebooks convert (ImageSet)."""

    def __init__(self, views: dict[str, torch.Tensor], offset: int, device: torch.device) -> None:
        self.views, self.offset, self.device = views, offset, device

    def __len__(self) -> int:
        return len(next(iter(self.views.values())))

    def uint8(self, view: View) -> torch.Tensor:
        return self.views[view.key]

    def images(self, view: View, value_range: tuple[float, float]) -> torch.Tensor:
        x = self.views[view.key]
        return ImageSet(x, torch.zeros(len(x)), value_range).tensors().to(self.device)


RunFn = Callable[[Images, bool], tuple[torch.Tensor, torch.Tensor | None]]


@dataclass
class Scorer:
    """A loaded method, ready to score: `run(images, with_maps)` -> (scores (N,), maps (N, h, w)
    or None). `batch_size`: the images its notebook scored together (the same batches give the
    same floating-point sums, hence the run's scores exactly)."""

    method: str
    views: tuple[View, ...]
    fn: RunFn
    batch_size: int = 256
    map_note: str = ""  # what the map shows
    no_map: str = ""  # non-empty: the method has no map, and this says why
    extras: dict = field(default_factory=dict)  # tensors an export carries (e.g. map statistics)

    def run(self, images: Images, with_maps: bool = False
            ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if with_maps and self.no_map:
            raise NoMap(self.no_map)
        scores, maps = self.fn(images, with_maps)
        return scores.detach().double().cpu(), None if maps is None else maps.detach().float().cpu()


@dataclass(frozen=True)
class Entry:
    build: Callable[[RunSource, str, torch.device], Scorer]
    checkpoints: Callable[[RunSource, str], Sequence[str]]
    parts: Callable[[RunSource, str], Sequence[str]]


REGISTRY: dict[str, Entry] = {}
# the modules whose import registers methods: the first ones together, later ones beside their code
METHOD_MODULES = ("method_scorers", "rotnet")


def _as_fn(value) -> Callable:
    return value if callable(value) else (lambda source, method: tuple(value))


def register(*methods: str, checkpoints=(), parts=()):
    """Decorator: `build(source, method, device) -> Scorer` scores the named methods.
    `checkpoints` / `parts`: names, or `f(source, method)` giving them (e.g. from the entry's
    parameters)."""
    def wrap(build):
        for method in methods:
            REGISTRY[method] = Entry(build, _as_fn(checkpoints), _as_fn(parts))
        return build
    return wrap


def registry() -> dict[str, Entry]:
    """Every method a detector can be made of (METHOD_MODULES imported first)."""
    for module in METHOD_MODULES:
        importlib.import_module(f"{__package__}.{module}")
    return REGISTRY


def entry_for(method: str) -> Entry:
    entries = registry()
    if method not in entries:
        raise KeyError(f"no detector is registered for method {method!r}; known: "
                       f"{', '.join(sorted(entries))}")
    return entries[method]


def build(source: RunSource, method: str, device: torch.device) -> Scorer:
    """The method's Scorer, scoring as its notebook recorded: with the complexity correction
    (`complexity.correct_tables`) where its metrics.json parameters carry the fitted line,
    measured on the images of the scorer's first view, as the notebook measured its split's."""
    from .complexity import Correction, png_bits_per_dim

    scorer = entry_for(method).build(source, method, device)
    correction = Correction.from_params(source.params(method))
    if correction is None:
        return scorer
    view, scored = scorer.views[0], scorer.fn

    def corrected(batch: Images, maps: bool):
        scores, amap = scored(batch, maps)
        return torch.from_numpy(correction(scores, png_bits_per_dim(batch.uint8(view)))), amap

    return replace(scorer, fn=corrected)


# ---------------------------------------------------------------------------------------------


class RunSource:
    """What a run folder recorded, as a detector reads it: metrics.json's entries, validation
    scores, checkpoints, and the validation images (lazily, from split.json) where a method
    standardises its maps."""

    def __init__(self, run: Run, extras: dict | None = None, split=None) -> None:
        self.run = run
        path = run.metrics_path
        if not path.is_file():
            raise FileNotFoundError(f"{run.root} has no metrics.json; give a run folder that a "
                                    f"method notebook finished (e.g. runs/demo) or a detector "
                                    f"file from anogan-guide export")
        self.metrics = json.loads(path.read_text())
        self.extras = extras or {}
        self._split = split
        self._val_cache: dict[str, torch.Tensor] = {}

    @property
    def methods(self) -> list[str]:
        return list(self.metrics.get("methods", {}))

    def entry(self, method: str) -> dict:
        methods = self.metrics.get("methods", {})
        if method not in methods:
            raise KeyError(f"{self.run.root} has no method {method!r}; it has "
                           f"{', '.join(methods) or 'none yet'}")
        return methods[method]

    def params(self, method: str) -> dict:
        return self.entry(method).get("params") or {}

    def val_scores(self, method: str) -> np.ndarray:
        path = self.run.scores / f"{method}.npz"
        if not path.is_file():
            raise FileNotFoundError(f"no scores for {method} at {path}; run its notebook with "
                                    f"this run_dir first")
        with np.load(path) as data:
            return data["val/score"].astype(np.float64)

    def checkpoint_config(self, name: str) -> dict:
        return read_checkpoint(self.run.model_saves / f"{name}.pt")["config"]

    def view(self, name: str) -> View:
        """The image size and channels a checkpoint (e.g. "ganomaly_best") was trained on."""
        config = self.checkpoint_config(name)
        return View(int(config["image_size"]), int(config["channels"]))

    def val_images(self, view: View) -> torch.Tensor:
        """The run's validation normals, uint8 at `view` (read again from the data split.json
        names; the split passed in when the caller has it)."""
        if view.key not in self._val_cache:
            split = self._split
            if split is None or split.image_size != view.image_size:
                from .data import load_one_class

                saved = json.loads(self.run.split_path.read_text()) \
                    if self.run.split_path.is_file() else None
                if saved is None:
                    raise FileNotFoundError(f"{self.run.root} has no split.json to read the "
                                            f"validation normals from")
                split = load_one_class(saved["dataset"], saved["normal_class"],
                                       data_root=saved.get("data_root"),
                                       image_size=view.image_size, seed=saved["seed"],
                                       val_fraction=saved["val_fraction"])
            self._val_cache[view.key] = split.val.images
        return self._val_cache[view.key]


__all__ = ["Entry", "Images", "METHOD_MODULES", "NoMap", "REGISTRY", "RunSource", "Scorer",
           "build", "entry_for", "register", "registry"]
