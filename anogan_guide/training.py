"""The chores every method's training loop shares, in one place.

A method writes only its own step; `TrainingLoop` does the rest: progress bars, the loss history,
the non-finite-loss guard, a progress image and a checkpoint every epoch, the best checkpoint by a
validation-only criterion, and resuming from the last checkpoint.

    loop = TrainingLoop(run, "gradcon", config, models={"ae": ae}, optimizers={"adam": opt},
                        epochs=20, resume=True, generators=(shuffle_gen,))
    for epoch in loop.epochs():
        for step, (x, _) in loop.steps(loader):
            ...
            loop.record(step, loss=loss)
        loop.end_epoch(val_loss=..., images=reconstructions, value_range=(0, 1))
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import torch

from .runs import (
    CheckpointError,
    Run,
    load_config_checked,
    progress,
    read_checkpoint,
    restore_models,
    rng_state,
    save_checkpoint,
    save_image_grid,
    set_rng_state,
)

# config keys that may change on resume: more epochs continue the training, and resume itself
RESUME_FREE_KEYS = ("epochs", "resume")


class NonFiniteLossError(FloatingPointError):
    """A loss became NaN or infinite; training stopped and the last good checkpoint stays."""


class TrainingLoop:
    """Progress, history, finite-loss guard, checkpoints (last + best), progress images, resume."""

    def __init__(self, run: Run, method: str, config: dict, *, models: dict[str, torch.nn.Module],
                 optimizers: dict[str, torch.optim.Optimizer], epochs: int, resume: bool = False,
                 arch_keys: Sequence[str] = ("image_size", "channels"),
                 generators: Sequence[torch.Generator] = (),
                 extra: dict[str, torch.Tensor] | None = None,
                 free_keys: Sequence[str] = ()) -> None:
        if epochs < 1:
            raise ValueError(f"epochs must be at least 1 (got {epochs}); pass e.g. -p epochs 5")
        self.run, self.method, self.config = run, method, dict(config)
        self.models, self.optimizers = models, optimizers
        self.total_epochs = epochs
        self.generators = tuple(generators)
        self.extra: dict[str, torch.Tensor] = dict(extra or {})
        self.history: dict[str, list[float]] = {}
        self.epoch_history: dict[str, list[float]] = {}
        self.epoch = 0  # epochs completed so far
        self.best_value = math.inf
        self.best_epoch = -1
        self.train_seconds = 0.0
        self.resumed_from: int | None = None
        last = run.checkpoint(method, "last")
        if resume and last.is_file():
            self._resume(last, arch_keys, free_keys)

    # -- resume ---------------------------------------------------------------------------------
    def _resume(self, path: Path, arch_keys: Sequence[str], free_keys: Sequence[str]) -> None:
        checkpoint = read_checkpoint(path)
        if checkpoint.get("method") != self.method:
            raise CheckpointError(f"{path} holds a {checkpoint.get('method')!r} model, not "
                                  f"{self.method!r}; use another run_dir or resume=False")
        load_config_checked(checkpoint, self.config, path, arch_keys)
        # any other training parameter must match too: resuming would mix two trainings (a new
        # best-epoch criterion, say, would never see the epochs already trained)
        free = {*RESUME_FREE_KEYS, *free_keys}
        saved = checkpoint.get("config", {})
        changed = {k: (saved.get(k), self.config.get(k)) for k in sorted({*saved, *self.config})
                   if k not in free and saved.get(k) != self.config.get(k)}
        if changed:
            desc = ", ".join(f"{k}={old!r} there vs {new!r} here"
                             for k, (old, new) in changed.items())
            raise CheckpointError(f"{path} was trained with other parameters ({desc}); resuming "
                                  f"would mix two trainings: use the same parameters, or "
                                  f"resume=False to train again")
        restore_models(checkpoint, self.models, self.optimizers, path)
        set_rng_state(checkpoint["rng"], *self.generators)
        self.epoch = checkpoint["epoch"]
        self.history = {k: list(v) for k, v in checkpoint["history"].get("steps", {}).items()}
        self.epoch_history = {k: list(v) for k, v in checkpoint["history"].get("epochs", {}).items()}
        m = checkpoint["metrics"]
        self.best_value, self.best_epoch = m.get("best_value", math.inf), m.get("best_epoch", -1)
        self.train_seconds = m.get("train_seconds", 0.0)
        for k, v in checkpoint["extra"].items():
            self.extra[k] = v.to(self.extra[k].device) if k in self.extra else v
        self.resumed_from = self.epoch

    # -- the loop -------------------------------------------------------------------------------
    def epochs(self) -> Iterator[int]:
        """Yield the epoch numbers still to train (0-based), with a progress bar over epochs."""
        bar = progress(range(self.epoch, self.total_epochs), desc=f"{self.method} epochs",
                       initial=self.epoch, total=self.total_epochs)
        for epoch in bar:
            self._epoch_start = time.perf_counter()
            self._epoch_losses: dict[str, list[float]] = {}
            yield epoch
            if self.epoch != epoch + 1:
                raise RuntimeError("call loop.end_epoch() at the end of every epoch")
            if self._epoch_losses:
                bar.set_postfix({k: f"{v:.4g}" for k, v in self.last_epoch_means().items()})

    def steps(self, batches: Iterable) -> Iterator[tuple[int, object]]:
        """Enumerate one epoch's batches with a progress bar (left in place only in Jupyter)."""
        total = len(batches) if hasattr(batches, "__len__") else None
        bar = progress(batches, desc=f"epoch {self.epoch + 1}/{self.total_epochs}", total=total,
                       leave=False)
        yield from enumerate(bar)

    def record(self, step: int, **losses: float | torch.Tensor) -> dict[str, float]:
        """Keep one step's losses; stop with a clear message when one is not finite."""
        values = {k: float(v.detach() if isinstance(v, torch.Tensor) else v)
                  for k, v in losses.items()}
        for name, value in values.items():
            if not math.isfinite(value):
                last = self.run.checkpoint(self.method, "last")
                kept = (f"the last good checkpoint {last} (epoch {self.epoch}) stays"
                        if last.is_file() else "no checkpoint was written yet")
                raise NonFiniteLossError(
                    f"{self.method}: loss {name} became {value} at epoch {self.epoch + 1}, step "
                    f"{step + 1}; {kept}. Lower the learning rate or check the input range.")
            self.history.setdefault(name, []).append(value)
            self._epoch_losses.setdefault(name, []).append(value)
        return values

    def last_epoch_means(self) -> dict[str, float]:
        return {k: sum(v) / len(v) for k, v in self._epoch_losses.items() if v}

    def end_epoch(self, *, val_loss: float | None = None, images: torch.Tensor | None = None,
                  value_range: tuple[float, float] = (0.0, 1.0), metrics: dict | None = None,
                  nrow: int = 8) -> bool:
        """Save the progress image and the last checkpoint (and the best one when `val_loss`,
        computed on validation normals only, improved). Returns True when this epoch is the best."""
        self.train_seconds += time.perf_counter() - self._epoch_start
        epoch = self.epoch + 1
        for k, v in self.last_epoch_means().items():
            self.epoch_history.setdefault(k, []).append(v)
        if val_loss is not None:
            if not math.isfinite(val_loss):
                raise NonFiniteLossError(f"{self.method}: validation loss became {val_loss} after "
                                         f"epoch {epoch}; the last good checkpoint stays.")
            self.epoch_history.setdefault("val_loss", []).append(float(val_loss))
        if images is not None:
            save_image_grid(images, self.run.epoch_grid(self.method, epoch),
                            value_range=value_range, nrow=nrow)
        is_best = val_loss is None or val_loss < self.best_value
        if is_best:
            self.best_value = float(val_loss) if val_loss is not None else math.inf
            self.best_epoch = epoch
        self.epoch = epoch
        checkpoint = dict(
            method=self.method, config=self.config, epoch=epoch, models=self.models,
            optimizers=self.optimizers, rng=rng_state(*self.generators),
            metrics={"best_value": self.best_value, "best_epoch": self.best_epoch,
                     "train_seconds": self.train_seconds, **(metrics or {})},
            history={"steps": self.history, "epochs": self.epoch_history}, extra=self.extra)
        save_checkpoint(self.run.checkpoint(self.method, "last"), **checkpoint)
        if is_best:
            save_checkpoint(self.run.checkpoint(self.method, "best"), **checkpoint)
        return is_best


class Cycled:
    """Whole passes over a loader until at least `min_steps` batches: an epoch of a tiny data set
    (112 digits = 1 batch of 64) would otherwise be a single optimiser step. MNIST's ~85 batches
    per epoch are left as they are."""

    def __init__(self, loader: Iterable, min_steps: int) -> None:
        self.loader = loader
        self.passes = max(1, -(-max(0, min_steps) // max(1, len(loader))))

    def __len__(self) -> int:
        return self.passes * len(self.loader)

    def __iter__(self) -> Iterator:
        for _ in range(self.passes):
            yield from self.loader


def load_trained(run: Run, method: str, models: dict[str, torch.nn.Module], *,
                 which: str = "best", map_location: str | torch.device = "cpu") -> dict:
    """Load a method's models from its checkpoint in a fresh kernel; returns the checkpoint dict
    (config, epoch, metrics, history, extra) for whatever else the method needs."""
    path = run.checkpoint(method, which)
    checkpoint = read_checkpoint(path, map_location)
    if checkpoint.get("method") != method:
        raise CheckpointError(f"{path} holds a {checkpoint.get('method')!r} model, not {method!r}")
    restore_models(checkpoint, models, None, path)
    for model in models.values():
        model.eval()
    return checkpoint


def total_train_seconds(run: Run, method: str, metrics: dict) -> float:
    """The whole training time (the last checkpoint's), also when the best epoch was earlier;
    `metrics` (the loaded checkpoint's) when there is no last checkpoint."""
    last = run.checkpoint(method, "last")
    if last.is_file():
        return float(read_checkpoint(last)["metrics"].get("train_seconds", 0.0))
    return float(metrics.get("train_seconds", 0.0))
