"""GANomaly (Akcay et al., ACCV 2018): training, validation-only model selection and scoring.

The generator encodes an image (z = E1(x)), decodes it (x_hat) and encodes the reconstruction
again (z_hat = E2(x_hat)); the discriminator is a DCGAN discriminator whose last feature map f
serves the adversarial loss. Losses as published:

    L_adv = ||f(x) - f(x_hat)||^2   (feature matching, mean over the feature map)
    L_con = ||x - x_hat||_1         (mean absolute error)
    L_enc = ||z - z_hat||^2         (mean over the latent dimensions)
    L_G   = w_adv L_adv + w_con L_con + w_enc L_enc      (1, 50, 1)
    L_D   = BCE(D(x), 1) / 2 + BCE(D(x_hat), 0) / 2, D re-initialised when L_D < 1e-5.

The anomaly score of an image is its L_enc. Unlike the public code, the best epoch is chosen on
validation normals only, scoring runs in eval mode (BatchNorm's running statistics, no gradients,
batched), and no statistic is taken from the test set.

With `w_rot > 0` the discriminator also learns, SS-GAN style, which quarter turn a normal image
was shown in (`rothead.py`: L_D += w_rot L_rot, and L_G += w_rot_g times the rotation loss of
the reconstructions); its per-image rotation loss is a fourth term, `l_rot`. A score of several
terms (`score_terms`) standardises each with the validation normals' statistics and combines
them by `weighting` (`fusion.py`, as the hybrid does), fitted after every epoch and saved with
the checkpoint; one term alone is the score as it is (`l_enc`: the published score).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import rothead, scorerule
from .data import OneClassSplit, image_batches
from .evaluate import dev_metrics
from .fusion import Combination, fit_combination, pseudo_anomalies
from .ganomaly_config import (  # noqa: F401 (re-exported: ganomaly.GanomalyConfig, ...)
    ROTATION_KEYS,
    SCORE_TERMS,
    SELECTION_CRITERIA,
    GanomalyConfig,
    checkpoint_config,
)
from .nets import GanomalyDiscriminator, GanomalyGenerator, dcgan_init, eval_mode
from .runs import Run, config_from_dict, read_checkpoint, save_image_grid
from .training import Cycled, TrainingLoop, load_trained

METHOD = "ganomaly"
VALUE_RANGE = (-1.0, 1.0)  # tanh decoder
D_COLLAPSE = 1e-5  # the published re-initialisation threshold on the discriminator's loss
ARCH_KEYS = ("image_size", "channels", "latent_dim", "width")
ScoreTable = dict[str, torch.Tensor]


@dataclass
class TrainedGanomaly:
    """A trained (or reloaded) generator and discriminator, with what training recorded."""

    generator: GanomalyGenerator
    discriminator: GanomalyDiscriminator
    config: GanomalyConfig
    epoch: int  # the epoch these weights come from
    best_epoch: int
    history: dict[str, list[float]] = field(default_factory=dict)  # per step
    epoch_history: dict[str, list[float]] = field(default_factory=dict)  # per epoch, val_* too
    train_seconds: float = 0.0
    combination: Combination | None = None  # several score terms: fitted on validation normals


# ---------------------------------------------------------------------------------------------
# Losses


def generator_losses(x: torch.Tensor, x_hat: torch.Tensor, z: torch.Tensor, z_hat: torch.Tensor,
                     features_real: torch.Tensor, features_fake: torch.Tensor
                     ) -> dict[str, torch.Tensor]:
    """The three published terms per image (1-d tensors): l_adv, l_con, l_enc."""
    return {
        "l_adv": (features_real - features_fake).pow(2).flatten(1).mean(1),
        "l_con": (x - x_hat).abs().flatten(1).mean(1),
        "l_enc": (z - z_hat).pow(2).flatten(1).mean(1),
    }


def discriminator_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """BCE: real images -> 1, reconstructions -> 0, averaged over the two halves."""
    real = F.binary_cross_entropy_with_logits(logits_real, torch.ones_like(logits_real))
    fake = F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
    return 0.5 * (real + fake)


def discriminator_step(d: GanomalyDiscriminator, optimizer: torch.optim.Optimizer,
                       x: torch.Tensor, x_hat: torch.Tensor, config: GanomalyConfig,
                       flips: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """One step of D on BCE (real `x` vs the detached reconstruction `x_hat`), plus, with
    w_rot > 0, w_rot times its rotation head's loss on the four turns of `x` (mirrored at random
    by `flips`). Returns the step's detached losses: d_loss (the adversarial part, which the
    collapse test reads), and with the head d_rot and acc_rot."""
    d_loss = discriminator_loss(d(x), d(x_hat.detach()))
    total, out = d_loss, {}
    if config.w_rot:
        d_rot, accuracy = rothead.rotation_loss(d, x, flips)
        total = d_loss + config.w_rot * d_rot
        out = {"d_rot": d_rot.detach(), "acc_rot": accuracy}
    optimizer.zero_grad(set_to_none=True)
    total.backward()
    optimizer.step()
    return {"d_loss": d_loss.detach(), **out}


def reinit_discriminator(discriminator: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Fresh DCGAN weights for a collapsed discriminator; its Adam moments are dropped too,
    since they describe the collapsed weights."""
    discriminator.apply(dcgan_init)
    for module in discriminator.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.reset_running_stats()
    optimizer.state.clear()


# ---------------------------------------------------------------------------------------------
# Scoring


@torch.no_grad()
def score_with_latent(trained: TrainedGanomaly, images, *, batch_size: int = 256,
                      combination: Combination | None | str = "trained"
                      ) -> tuple[ScoreTable, torch.Tensor]:
    """Per-image l_enc, l_con and l_adv (and l_rot, acc_rot with the rotation head), the score
    (`_score_of`), plus the latent codes z (N, latent_dim).

    Eval mode (BatchNorm uses its running statistics, so an image's score does not depend on the
    other images in its batch), no gradients, batched. The models' modes are restored after."""
    g, d = trained.generator, trained.discriminator
    device = next(g.parameters()).device
    terms: dict[str, list[torch.Tensor]] = {"l_enc": [], "l_con": [], "l_adv": []}
    if d.has_rotation_head:
        terms |= {"l_rot": [], "acc_rot": []}
    latents = []
    with eval_mode(g, d):
        for x in image_batches(images, batch_size, VALUE_RANGE):
            x = x.to(device, non_blocking=True)
            x_hat, z, z_hat = g(x)
            per_image = generator_losses(x, x_hat, z, z_hat, d.features(x), d.features(x_hat))
            if d.has_rotation_head:
                per_image |= rothead.terms(d, x, trained.config.rot_flips)
            for name, values in per_image.items():
                terms[name].append(values.float().cpu())
            latents.append(z.float().cpu())
    table = {k: torch.cat(v) if v else torch.zeros(0) for k, v in terms.items()}
    table["score"] = _score_of(table, trained, combination)
    z_all = torch.cat(latents) if latents else torch.zeros(0, g.latent_dim)
    return table, z_all


def _score_of(table: ScoreTable, trained: TrainedGanomaly, combination) -> torch.Tensor:
    """The `score` column: the combination ("trained": the trained one; a single score term
    is the score as it is), else l_enc (several terms before the first fit, or None)."""
    terms = trained.config.terms
    if combination == "trained":
        combination = trained.combination
        if len(terms) == 1 and terms[0] in table:
            return table[terms[0]].clone()
    return scorerule.column(table, combination)


def score(trained: TrainedGanomaly, images, *, batch_size: int = 256) -> ScoreTable:
    """The score table of `images`, one value per image: l_enc, l_con, l_adv, with the rotation
    head l_rot and acc_rot, and score (l_enc, or the configured combination of terms)."""
    return score_with_latent(trained, images, batch_size=batch_size)[0]


def fit_score(trained: TrainedGanomaly, val_table: ScoreTable, val_images: torch.Tensor
              ) -> Combination | None:
    """The combination of the configured score terms, fitted on the validation normals' table
    (None for a single term: it is the score as it is); `pseudo` scores their pseudo-anomalies."""
    cfg = trained.config
    if len(cfg.terms) == 1:
        return None
    pseudo = (score(trained, pseudo_anomalies(val_images)) if cfg.weighting == "pseudo"
              else None)
    return fit_combination(val_table, cfg.terms, weighting=cfg.weighting, pseudo_table=pseudo,
                           weights=cfg.weights)


@torch.no_grad()
def reconstruct(trained: TrainedGanomaly, images: torch.Tensor, *, batch_size: int = 256
                ) -> torch.Tensor:
    """x_hat for images in [-1, 1] (eval mode, no gradients)."""
    g = trained.generator
    device = next(g.parameters()).device
    with eval_mode(g):
        out = [g(x.to(device))[0].cpu() for x in images.split(batch_size)]
    return torch.cat(out)


def save_reconstructions(trained: TrainedGanomaly, images: torch.Tensor, path: str | Path, *,
                         nrow: int = 8) -> torch.Tensor:
    """Save originals (odd rows) above their reconstructions (even rows) as one PNG; returns
    the interleaved batch for display."""
    x_hat = reconstruct(trained, images)
    rows = [torch.cat([images[i:i + nrow], x_hat[i:i + nrow]]) for i in range(0, len(images), nrow)]
    grid = torch.cat(rows)
    save_image_grid(grid, path, value_range=VALUE_RANGE, nrow=nrow)
    return grid


def validation_criterion(val_table: ScoreTable, z: torch.Tensor, select: str) -> float | None:
    """The number the best epoch minimises, from validation normals only.

    l_enc_rel (the default): mean L_enc divided by the mean squared spread of z around its
    validation mean, i.e. the share of the codes' variance that E2 fails to recover (1 - R^2).
    Plain l_enc (mean L_enc) is scale-dependent: an untrained or collapsing encoder gives tiny
    codes and so a tiny L_enc, and selecting on it picks the untrained first epoch; the ratio
    is 1 or more for such a model and cannot be lowered by shrinking the latent space.
    l_con: mean L_con; last: no selection (the last epoch is kept)."""
    if select == "last":
        return None
    if select == "l_enc_rel":
        spread = (z - z.mean(0)).pow(2).mean()
        return float(val_table["l_enc"].mean() / spread.clamp_min(1e-12))
    return float(val_table[select].mean())


# ---------------------------------------------------------------------------------------------
# Training


def combination_extra(config: GanomalyConfig, combination: Combination | None
                      ) -> dict[str, torch.Tensor]:
    """The checkpoint's `extra` for a score of several terms; nothing for one term (as
    checkpoints were before GANomaly's score could combine terms)."""
    return {} if len(config.terms) == 1 else scorerule.extra(len(config.terms), combination)


def build_models(image_size: int, channels: int, config: GanomalyConfig,
                 device: torch.device | str = "cpu"
                 ) -> tuple[GanomalyGenerator, GanomalyDiscriminator]:
    """A fresh generator and discriminator (DCGAN init, seeded by config.seed)."""
    torch.manual_seed(config.seed)
    g = GanomalyGenerator(image_size, channels, config.latent_dim, config.width).to(device)
    d = GanomalyDiscriminator(image_size, channels, config.width,
                              rotation_head=config.w_rot > 0).to(device)
    return g, d


def train(split: OneClassSplit, config: GanomalyConfig, run: Run,
          device: torch.device | str = "cpu", *,
          on_epoch: Callable[[TrainedGanomaly, int], None] | None = None,
          progress_images: int = 16) -> TrainedGanomaly:
    """Train GANomaly on the split's normal training images; returns the best epoch's models
    (best by `config.select` on the validation normals). `on_epoch(trained, epoch)` is called
    after each epoch with the current weights (for monitoring; it must not train)."""
    device = torch.device(device)
    g, d = build_models(split.image_size, split.channels, config, device)
    betas = (config.beta1, 0.999)
    opt_g = torch.optim.Adam(g.parameters(), lr=config.lr, betas=betas)
    opt_d = torch.optim.Adam(d.parameters(), lr=config.lr, betas=betas)
    shuffle = torch.Generator().manual_seed(config.seed)
    flips = rothead.rotation_flips(config)
    loop = TrainingLoop(run, METHOD, checkpoint_config(config, split),
                        models={"generator": g, "discriminator": d},
                        optimizers={"generator": opt_g, "discriminator": opt_d},
                        epochs=config.epochs, resume=config.resume, arch_keys=ARCH_KEYS,
                        generators=(shuffle, *flips), extra=combination_extra(config, None))
    train_set = split.train.in_range(*VALUE_RANGE)
    # a last batch of one image would break BatchNorm in train mode
    loader = Cycled(train_set.loader(config.batch_size, shuffle=True, generator=shuffle,
                                      drop_last=len(train_set) > config.batch_size),
                     config.min_steps_per_epoch)
    val_images = split.val.in_range(*VALUE_RANGE).tensors()
    shown = val_images[:progress_images].to(device)
    trained = TrainedGanomaly(g, d, config, loop.epoch, loop.best_epoch)
    reinits = int(loop.epoch_history.get("d_reinits", [0])[-1]) if loop.epoch_history else 0

    for epoch in loop.epochs():
        g.train()
        d.train()
        for step, (x, _) in loop.steps(loader):
            x = x.to(device, non_blocking=True)
            # generator step
            x_hat, z, z_hat = g(x)
            with torch.no_grad():
                features_real = d.features(x)
            terms = {k: v.mean() for k, v in generator_losses(
                x, x_hat, z, z_hat, features_real, d.features(x_hat)).items()}
            g_loss = (config.w_adv * terms["l_adv"] + config.w_con * terms["l_con"]
                      + config.w_enc * terms["l_enc"])
            if config.w_rot_g:  # SS-GAN: G's reconstructions should show their turns to D
                terms["g_rot"] = rothead.rotation_loss(d, x_hat)[0]
                g_loss = g_loss + config.w_rot_g * terms["g_rot"]
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            # discriminator step (real vs the detached reconstruction, the rotation head)
            d_losses = discriminator_step(d, opt_d, x, x_hat, config, *flips)
            loop.record(step, g_loss=g_loss, **d_losses, **terms)
            if d_losses["d_loss"].item() < D_COLLAPSE:
                reinit_discriminator(d, opt_d)
                reinits += 1
        val_table, val_z = score_with_latent(trained, split.val, combination=None)
        trained.combination = fit_score(trained, val_table, val_images)
        val_table["score"] = _score_of(val_table, trained, "trained")
        loop.extra.update(combination_extra(config, trained.combination))
        for name in ("l_enc", "l_con", "l_adv", "l_rot"):
            if name in val_table:
                loop.epoch_history.setdefault(f"val_{name}", []).append(
                    float(val_table[name].mean()))
        loop.epoch_history.setdefault("val_l_enc_rel", []).append(
            validation_criterion(val_table, val_z, "l_enc_rel"))
        loop.epoch_history.setdefault("d_reinits", []).append(float(reinits))
        if split.has_dev:  # recorded to compare the `select` criteria on dev; never selects
            dev = dev_metrics(val_table["score"], score(trained, split.dev)["score"])
            loop.epoch_history.setdefault("dev_auroc", []).append(dev["auroc"])
        criterion = validation_criterion(val_table, val_z, config.select)
        images = None
        if len(shown):
            images = torch.cat([shown, reconstruct(trained, shown)])
        loop.end_epoch(val_loss=criterion, images=images, value_range=VALUE_RANGE,
                       nrow=max(1, len(shown)), metrics={"d_reinits": reinits})
        if on_epoch is not None:
            trained.epoch = epoch + 1
            on_epoch(trained, epoch + 1)

    best = load(run, device, which="best")  # the weights and combination of that epoch
    return TrainedGanomaly(best.generator, best.discriminator, config, best.epoch,
                           loop.best_epoch, history=loop.history,
                           epoch_history=loop.epoch_history, train_seconds=loop.train_seconds,
                           combination=best.combination)


def load_networks(run: Run, method: str, config_class: type, device: torch.device | str = "cpu",
                  which: str = "best"):
    """(config, generator, discriminator, checkpoint) of a GANomaly-family run (GANomaly, the
    hybrid), rebuilt from the checkpoint's config in a fresh kernel, in eval mode."""
    saved = read_checkpoint(run.checkpoint(method, which))["config"]
    config = config_from_dict(config_class, saved)
    g = GanomalyGenerator(saved["image_size"], saved["channels"], config.latent_dim, config.width)
    d = GanomalyDiscriminator(saved["image_size"], saved["channels"], config.width,
                              rotation_head=config.w_rot > 0)  # absent from older checkpoints
    g, d = g.to(device), d.to(device)
    checkpoint = load_trained(run, method, {"generator": g, "discriminator": d}, which=which,
                              map_location=device)
    return config, g, d, checkpoint


def load(run: Run, device: torch.device | str = "cpu", which: str = "best") -> TrainedGanomaly:
    """Reload trained GANomaly models from the run folder (in a fresh kernel), in eval mode."""
    config, g, d, checkpoint = load_networks(run, METHOD, GanomalyConfig, device, which)
    m = checkpoint["metrics"]
    combination = (Combination.from_tensors(checkpoint["extra"], config.terms)
                   if len(config.terms) > 1 else None)
    return TrainedGanomaly(g, d, config, checkpoint["epoch"], m.get("best_epoch", -1),
                           history=checkpoint["history"].get("steps", {}),
                           epoch_history=checkpoint["history"].get("epochs", {}),
                           train_seconds=m.get("train_seconds", 0.0), combination=combination)
