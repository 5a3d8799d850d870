"""GradCon (Kwon et al., ECCV 2020): an autoencoder whose decoder gradients score anomalies.

Training: loss = MSE + beta * L_grad, where L_grad is the mean over the decoder's transposed-conv
weights W of -cos(dMSE/dW, ref_W). dMSE/dW is taken with `create_graph=True`, so L_grad trains
the weights through a second-order term; ref_W is the running (cumulative) average of W's
gradient of the training loss over all training steps so far, as the official code keeps it
(L_grad = 0 at the first step, where the gradient is dMSE/dW). The references are saved in the
checkpoint (`extra`), so a reloaded model scores exactly as the trained one.

Scoring: anomaly score = MSE_i - grad_weight * mean_W cos(dMSE_i/dW, ref_W) for each image i
(the paper's normality score negated, so higher = more anomalous).

The per-image scoring terms (one batched pass, not one backward pass per image): `gradscore`.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .data import OneClassSplit
from .gradscore import EPS, GRAD_WEIGHT, ScoreTable, score_table
from .nets import GradConAE
from .runs import Run, save_image_grid
from .training import TrainingLoop, load_trained

METHOD = "gradcon"
REF_PREFIX = "ref/"  # reference gradients in the checkpoint's `extra` dict: "ref/<param name>"
REF_STEPS = "ref_steps"  # how many training steps the running averages hold
ATTEMPT = "attempt"  # which training (0: the first; k: the k-th restart after a dead network)
# config keys used only when scoring: a finished training is re-scored with new values of these
# (`-p resume true`), any other change trains again
SCORE_KEYS = ("grad_weight", "score_batch_size")
# ... and max_restarts, which does not change one training either: all may differ on resume
RESUME_FREE_KEYS = (*SCORE_KEYS, "max_restarts")
# A training whose reconstructions of the validation normals still do not follow them after this
# many steps is abandoned for a new initialisation (`follows_input`). Measured on training and
# validation normals (MNIST classes 1 and 7, CIFAR-10 (JPEG) airplane and automobile): healthy
# trainings left the mean image within 2-4 epochs, their spread 55-71% at 500-570 steps; the
# collapsed ones (MNIST class 1) 0.6-1.6% there, and 0.1-0.7% after all 50 epochs in earlier runs.
# 8x8 digits (3 steps an epoch) never get here: the check after training covers them.
CHECK_STEPS = 500


@dataclass
class GradConConfig:
    """GradCon's training and scoring parameters (json-safe)."""

    epochs: int = 20  # training epochs (official default 1000; best epoch by validation loss)
    batch_size: int = 64  # training batch size
    lr: float = 1e-3  # Adam learning rate
    beta: float = 0.03  # weight of the gradient loss L_grad in training
    grad_weight: float = GRAD_WEIGHT  # weight of the mean cosine in the anomaly score
    score_batch_size: int = 256  # images per vectorised scoring pass
    seed: int = 0  # shuffling seed
    resume: bool = False  # continue from model_saves/gradcon_last.pt when it exists
    max_restarts: int = 5  # at most this many new initialisations when the autoencoder dies


@dataclass
class TrainedGradCon:
    """A trained (or reloaded) GradCon autoencoder with its reference gradients."""

    model: GradConAE
    reference: dict[str, torch.Tensor]  # decoder transposed-conv weight name -> mean gradient
    config: GradConConfig
    epoch: int = 0  # epoch of these weights
    best_epoch: int = -1
    train_seconds: float = 0.0
    history: dict[str, list[float]] = field(default_factory=dict)  # per step
    epoch_history: dict[str, list[float]] = field(default_factory=dict)  # per epoch (+ val_loss)
    restarts: int = 0  # trainings started again because the autoencoder had died (see train)
    follows_input: bool | None = None  # its reconstructions follow the inputs (None: not checked)

    @property
    def layer_names(self) -> list[str]:
        return list(self.reference)


# ---------------------------------------------------------------------------------------------
# Training


def cosine(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Cosine similarity of two tensors taken as flat vectors (differentiable)."""
    a, b = a.reshape(-1), b.reshape(-1)
    return (a @ b) / (a.norm() * b.norm()).clamp_min(EPS)


def gradient_loss(grads: Iterable[torch.Tensor], reference: Iterable[torch.Tensor]) -> torch.Tensor:
    """L_grad = mean over layers of -cos(gradient, reference gradient)."""
    cosines = [cosine(g, r) for g, r in zip(grads, reference, strict=True)]
    return -torch.stack(cosines).mean()


def gradcon_step(model: GradConAE, optimizer: torch.optim.Optimizer, x: torch.Tensor,
                 reference: dict[str, torch.Tensor], steps: torch.Tensor, beta: float
                 ) -> dict[str, torch.Tensor]:
    """One training step: MSE + beta * L_grad, and this step's gradient of that loss with
    respect to each scored weight folded into its running-average reference (in place; `steps`
    counts the steps averaged so far)."""
    params = dict(model.named_parameters())
    weights = [params[name] for name in reference]
    x_hat = model(x)
    mse = F.mse_loss(x_hat, x)
    if beta != 0 and int(steps) > 0:  # no reference yet at the first step
        # create_graph: L_grad depends on the weights through dMSE/dW, so it trains them too
        grads = torch.autograd.grad(mse, weights, create_graph=True)
        l_grad = gradient_loss(grads, reference.values())
        loss = mse + beta * l_grad
    else:
        l_grad = torch.zeros((), device=x.device)
        loss = mse
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    # the reference averages W's gradient of the whole training loss, as the official code does
    # (its `weight.grad` after backward); with dMSE/dW alone the score ranked MNIST class 0 at
    # AUROC 0.84 instead of 0.97 after 10 epochs (the book's methods chapter, docs/methods.md, GradCon)
    update_reference(reference, [w.grad for w in weights], steps)
    optimizer.step()
    return {"loss": loss.detach(), "mse": mse.detach(), "l_grad": l_grad.detach()}


@torch.no_grad()
def update_reference(reference: Mapping[str, torch.Tensor], grads: Iterable[torch.Tensor],
                     steps: torch.Tensor) -> None:
    """Fold one step's gradients into the running-average references (in place; `steps`
    counts the steps averaged so far and is incremented)."""
    steps += 1
    for g, ref in zip(grads, reference.values(), strict=True):
        ref += (g.detach() - ref) / steps  # the cumulative mean of all steps' gradients


def _arch(split: OneClassSplit) -> dict:
    return {"image_size": split.image_size, "channels": split.channels}


def train(split: OneClassSplit, config: GradConConfig, run: Run,
          device: torch.device | str = "cpu") -> TrainedGradCon:
    """Train GradCon on the split's normal training images; the best epoch is the one with the
    lowest validation loss (the training loss per validation normal, see `validation_loss`).

    From some initialisations the autoencoder collapses to the mean image (every image gets
    almost the same reconstruction from the second epoch on, and GradCon's score is near chance;
    a plain MSE autoencoder does the same, so it is not the gradient term). When the
    reconstructions of the validation normals do not follow them (`follows_input`: after
    CHECK_STEPS steps, and for the best epoch after training), training starts again from
    another initialisation, at most `config.max_restarts` times (`TrainedGradCon.restarts` says
    how many it took); if the last one has not left the mean image either, a warning says so
    (`TrainedGradCon.follows_input` False). Normal images only decide this."""
    device = torch.device(device)
    if config.batch_size < 1 or config.score_batch_size < 1:
        raise ValueError("batch_size and score_batch_size must be at least 1; e.g. "
                         "-p batch_size 64")
    val = split.val.tensors()
    attempt, spent = 0, 0.0  # spent: the seconds of the trainings started again
    while True:
        trained, abandoned = _train_once(split, config, run, device, attempt, val)
        attempt = trained.restarts  # a resumed run continues the attempt it was in
        if config.max_restarts == 0:  # no restart wanted: nothing to check
            return replace(trained, train_seconds=trained.train_seconds + spent)
        follows = not abandoned and follows_input(load(run, device).model, val)
        if follows or attempt >= config.max_restarts:
            if not follows:
                warnings.warn(
                    f"GradCon's autoencoder still gives every image the same reconstruction "
                    f"after {attempt} restarts: its scores are near chance. Train again with "
                    f"more restarts, e.g. -p max_restarts {2 * attempt + 2}", stacklevel=2)
            return replace(trained, train_seconds=trained.train_seconds + spent,
                           follows_input=follows)
        attempt, spent = attempt + 1, spent + trained.train_seconds
        config = replace(config, resume=False)  # the next attempt starts afresh


def follows_input(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> bool:
    """Whether the reconstructions vary with the input: their spread over the images (standard
    deviation per pixel, averaged) is at least 2% of the images' own. Collapsed autoencoders
    (the same image for every input) gave 0.1-0.7% (MNIST, 50 epochs), every other run in
    results/ at least 8.5% (8x8 digits at 30 epochs: 8.5-25%; MNIST and CIFAR-10 more). A few
    steps of training have not left the mean image yet either: restarting them only repeats
    them (params/ci.yaml sets max_restarts 0)."""
    model.eval()
    device = next(model.parameters()).device
    x = images[:1024]
    with torch.no_grad():
        y = torch.cat([model(b.to(device)).cpu() for b in x.split(batch_size)])
    return bool(y.std(0).mean() >= 0.02 * x.std(0).mean())


def _train_once(split: OneClassSplit, config: GradConConfig, run: Run, device: torch.device,
                attempt: int, val: torch.Tensor) -> tuple[TrainedGradCon, bool]:
    """One training (attempt 0: the initialisation of the global seed, as always; attempt k:
    one drawn from (seed, k)), and whether it was abandoned early: when a restart is still
    allowed, a training whose reconstructions do not follow the validation normals after
    CHECK_STEPS steps stops there (it would not have left the mean image)."""
    if attempt:
        torch.manual_seed(int(np.random.SeedSequence([config.seed, attempt]).generate_state(1)[0]))
    # channels-last: oneDNN's fast path for (transposed) convolutions on the CPU
    model = GradConAE(split.image_size, split.channels).to(device,
                                                           memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    reference = {name: torch.zeros_like(dict(model.named_parameters())[name])
                 for name in model.gradient_layers()}
    steps = torch.zeros((), dtype=torch.long)
    extra = {REF_PREFIX + k: v for k, v in reference.items()} | {
        REF_STEPS: steps, ATTEMPT: torch.tensor(attempt)}
    shuffle = torch.Generator().manual_seed(config.seed)
    loop = TrainingLoop(run, METHOD, asdict(config) | _arch(split), models={"ae": model},
                        optimizers={"adam": optimizer}, epochs=config.epochs,
                        resume=config.resume, generators=(shuffle,), extra=extra,
                        free_keys=RESUME_FREE_KEYS)
    # after a resume the loop holds the restored tensors (and attempt): train on those
    reference = {k: loop.extra[REF_PREFIX + k] for k in reference}
    steps = loop.extra[REF_STEPS]
    attempt = int(loop.extra[ATTEMPT])
    loader = split.train.loader(config.batch_size, shuffle=True, generator=shuffle)
    preview = val[:8].to(device)
    check = attempt < config.max_restarts  # the last allowed attempt always trains to the end
    abandoned = False
    for _ in loop.epochs():
        model.train()
        for step, (x, _) in loop.steps(loader):
            x = x.to(device).contiguous(memory_format=torch.channels_last)
            losses = gradcon_step(model, optimizer, x, reference, steps, config.beta)
            loop.record(step, **losses)
        model.eval()
        val_loss = validation_loss(model, reference, val, beta=config.beta,
                                   batch_size=config.score_batch_size)
        with torch.no_grad():
            images = torch.cat([preview, model(preview)])
        loop.end_epoch(val_loss=val_loss, images=images, value_range=(0, 1), nrow=8)
        if check and int(steps) >= CHECK_STEPS:
            check, abandoned = False, not follows_input(model, val)
            if abandoned:
                break
    model.eval()
    return TrainedGradCon(model, reference, config, epoch=loop.epoch, best_epoch=loop.best_epoch,
                          train_seconds=loop.train_seconds, history=loop.history,
                          epoch_history=loop.epoch_history,
                          restarts=attempt), abandoned


def validation_loss(model: nn.Module, reference: Mapping[str, torch.Tensor], val_images,
                    *, beta: float = 0.03, batch_size: int = 256) -> float:
    """The training loss evaluated per validation normal (MSE_i + beta * L_grad_i, with each
    image's own gradient, as at test time), averaged. Uses validation normals only."""
    table = score_table(model, reference, val_images, batch_size=batch_size, grad_weight=beta)
    return float((table["mse"] + beta * table["l_grad"]).mean())


def load(run: Run, device: torch.device | str = "cpu", which: str = "best") -> TrainedGradCon:
    """Reload a trained GradCon (weights and reference gradients) from the run's checkpoint."""
    from .runs import read_checkpoint

    path = run.checkpoint(METHOD, which)
    saved = read_checkpoint(path)["config"]  # to build the right architecture first
    model = GradConAE(saved["image_size"], saved["channels"])
    checkpoint = load_trained(run, METHOD, {"ae": model}, which=which, map_location="cpu")
    model.to(device).eval()
    fields = {f for f in GradConConfig.__dataclass_fields__}
    config = GradConConfig(**{k: v for k, v in checkpoint["config"].items() if k in fields})
    reference = {k[len(REF_PREFIX):]: v.to(device) for k, v in checkpoint["extra"].items()
                 if k.startswith(REF_PREFIX)}
    m = checkpoint["metrics"]
    return TrainedGradCon(model, reference, config, epoch=checkpoint["epoch"],
                          best_epoch=m.get("best_epoch", -1),
                          train_seconds=m.get("train_seconds", 0.0),
                          history=checkpoint["history"].get("steps", {}),
                          epoch_history=checkpoint["history"].get("epochs", {}),
                          restarts=int(checkpoint["extra"].get(ATTEMPT, 0)))


def score(trained: TrainedGradCon, images, *, batch_size: int | None = None,
          grad_weight: float | None = None) -> ScoreTable:
    """The house scoring interface: the score table of a trained GradCon."""
    cfg = trained.config
    return score_table(trained.model, trained.reference, images,
                       batch_size=batch_size or cfg.score_batch_size,
                       grad_weight=cfg.grad_weight if grad_weight is None else grad_weight)


def save_reconstructions(trained: TrainedGradCon, images: torch.Tensor, path: str | Path, *,
                         nrow: int = 8) -> torch.Tensor:
    """Save originals (odd rows) above their reconstructions (even rows) as one PNG; returns
    the interleaved batch for display."""
    model = trained.model.eval()
    device = next(model.parameters()).device
    with torch.no_grad():
        recon = model(images.to(device)).cpu()
    rows = [torch.cat([images[i:i + nrow].cpu(), recon[i:i + nrow]])
            for i in range(0, len(images), nrow)]
    grid = torch.cat(rows)
    save_image_grid(grid, path, value_range=(0, 1), nrow=nrow)
    return grid


__all__ = ["GradConConfig", "TrainedGradCon", "cosine", "gradcon_step", "gradient_loss", "load",
           "save_reconstructions", "score", "train", "update_reference", "validation_loss"]
