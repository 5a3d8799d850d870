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
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageSet, OneClassSplit
from .evaluate import dev_metrics
from .nets import GanomalyDiscriminator, GanomalyGenerator, dcgan_init
from .runs import Run, config_from_dict, read_checkpoint, save_image_grid
from .training import Cycled, TrainingLoop, load_trained

METHOD = "ganomaly"
VALUE_RANGE = (-1.0, 1.0)  # tanh decoder
D_COLLAPSE = 1e-5  # the published re-initialisation threshold on the discriminator's loss
SELECTION_CRITERIA = ("l_enc", "l_enc_rel", "l_con", "last")
ARCH_KEYS = ("image_size", "channels", "latent_dim", "width")
ScoreTable = dict[str, torch.Tensor]


@dataclass
class GanomalyConfig:
    """GANomaly's training parameters (json-safe; stored in every checkpoint)."""

    epochs: int = 15
    batch_size: int = 64
    min_steps_per_epoch: int = 10  # small sets (e.g. 8x8 digits) are cycled to this many steps
    lr: float = 2e-4
    beta1: float = 0.5
    latent_dim: int = 100
    width: int = 64  # first conv block's channels (64 as published)
    w_adv: float = 1.0
    w_con: float = 50.0
    w_enc: float = 1.0
    select: str = "l_enc_rel"  # validation criterion for the best epoch, see SELECTION_CRITERIA
    seed: int = 0
    resume: bool = False

    def __post_init__(self) -> None:
        if self.select not in SELECTION_CRITERIA:
            raise ValueError(f"select={self.select!r} is not a validation criterion; use one of "
                             f"{', '.join(SELECTION_CRITERIA)}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 for BatchNorm (got "
                             f"{self.batch_size}); use e.g. 64")


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


def _batches(images: ImageSet | torch.Tensor | Iterable, batch_size: int) -> Iterator[torch.Tensor]:
    """Image batches in [-1, 1] from an ImageSet (converted), a tensor (taken as already in
    [-1, 1]) or an iterable of batches / (images, labels) tuples."""
    if isinstance(images, ImageSet):
        for x, _ in images.in_range(*VALUE_RANGE).loader(batch_size):
            yield x
    elif isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"images must be shaped (N, C, H, W); got {tuple(images.shape)}")
        yield from images.split(batch_size)
    else:
        for item in images:
            yield item[0] if isinstance(item, list | tuple) else item


@torch.no_grad()
def score_with_latent(trained: TrainedGanomaly, images, *, batch_size: int = 256
                      ) -> tuple[ScoreTable, torch.Tensor]:
    """Per-image l_enc (= score), l_con and l_adv, plus the latent codes z (N, latent_dim).

    Eval mode (BatchNorm uses its running statistics, so an image's score does not depend on the
    other images in its batch), no gradients, batched. The models' modes are restored after."""
    g, d = trained.generator, trained.discriminator
    modes = g.training, d.training
    g.eval()
    d.eval()
    device = next(g.parameters()).device
    terms: dict[str, list[torch.Tensor]] = {"l_enc": [], "l_con": [], "l_adv": []}
    latents = []
    try:
        for x in _batches(images, batch_size):
            x = x.to(device, non_blocking=True)
            x_hat, z, z_hat = g(x)
            per_image = generator_losses(x, x_hat, z, z_hat, d.features(x), d.features(x_hat))
            for name, values in per_image.items():
                terms[name].append(values.float().cpu())
            latents.append(z.float().cpu())
    finally:
        g.train(modes[0])
        d.train(modes[1])
    table = {k: torch.cat(v) if v else torch.zeros(0) for k, v in terms.items()}
    table["score"] = table["l_enc"].clone()
    z_all = torch.cat(latents) if latents else torch.zeros(0, g.latent_dim)
    return table, z_all


def score(trained: TrainedGanomaly, images, *, batch_size: int = 256) -> ScoreTable:
    """The score table of `images`: l_enc, l_con, l_adv and score (= l_enc), one value per image."""
    return score_with_latent(trained, images, batch_size=batch_size)[0]


@torch.no_grad()
def reconstruct(trained: TrainedGanomaly, images: torch.Tensor, *, batch_size: int = 256
                ) -> torch.Tensor:
    """x_hat for images in [-1, 1] (eval mode, no gradients)."""
    g = trained.generator
    mode = g.training
    g.eval()
    device = next(g.parameters()).device
    try:
        out = [g(x.to(device))[0].cpu() for x in images.split(batch_size)]
    finally:
        g.train(mode)
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


def _config_dict(config: GanomalyConfig, split: OneClassSplit) -> dict:
    return {**asdict(config), "image_size": split.image_size, "channels": split.channels}


def build_models(image_size: int, channels: int, config: GanomalyConfig,
                 device: torch.device | str = "cpu"
                 ) -> tuple[GanomalyGenerator, GanomalyDiscriminator]:
    """A fresh generator and discriminator (DCGAN init, seeded by config.seed)."""
    torch.manual_seed(config.seed)
    g = GanomalyGenerator(image_size, channels, config.latent_dim, config.width).to(device)
    d = GanomalyDiscriminator(image_size, channels, config.width).to(device)
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
    loop = TrainingLoop(run, METHOD, _config_dict(config, split),
                        models={"generator": g, "discriminator": d},
                        optimizers={"generator": opt_g, "discriminator": opt_d},
                        epochs=config.epochs, resume=config.resume, arch_keys=ARCH_KEYS,
                        generators=(shuffle,))
    train_set = split.train.in_range(*VALUE_RANGE)
    # a last batch of one image would break BatchNorm in train mode
    loader = Cycled(train_set.loader(config.batch_size, shuffle=True, generator=shuffle,
                                      drop_last=len(train_set) > config.batch_size),
                     config.min_steps_per_epoch)
    shown = split.val.in_range(*VALUE_RANGE).tensors()[:progress_images].to(device)
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
            opt_g.zero_grad(set_to_none=True)
            g_loss.backward()
            opt_g.step()
            # discriminator step (real vs the detached reconstruction)
            d_loss = discriminator_loss(d(x), d(x_hat.detach()))
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            loop.record(step, g_loss=g_loss, d_loss=d_loss, **terms)
            if d_loss.item() < D_COLLAPSE:
                reinit_discriminator(d, opt_d)
                reinits += 1
        val_table, val_z = score_with_latent(trained, split.val)
        for name in ("l_enc", "l_con", "l_adv"):
            loop.epoch_history.setdefault(f"val_{name}", []).append(float(val_table[name].mean()))
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

    checkpoint = load_trained(run, METHOD, {"generator": g, "discriminator": d}, which="best",
                              map_location=device)
    return TrainedGanomaly(g, d, config, checkpoint["epoch"], loop.best_epoch,
                           history=loop.history, epoch_history=loop.epoch_history,
                           train_seconds=loop.train_seconds)


def load_networks(run: Run, method: str, config_class: type, device: torch.device | str = "cpu",
                  which: str = "best"):
    """(config, generator, discriminator, checkpoint) of a GANomaly-family run (GANomaly, the
    hybrid), rebuilt from the checkpoint's config in a fresh kernel, in eval mode."""
    saved = read_checkpoint(run.checkpoint(method, which))["config"]
    config = config_from_dict(config_class, saved)
    g = GanomalyGenerator(saved["image_size"], saved["channels"], config.latent_dim, config.width)
    d = GanomalyDiscriminator(saved["image_size"], saved["channels"], config.width)
    g, d = g.to(device), d.to(device)
    checkpoint = load_trained(run, method, {"generator": g, "discriminator": d}, which=which,
                              map_location=device)
    return config, g, d, checkpoint


def load(run: Run, device: torch.device | str = "cpu", which: str = "best") -> TrainedGanomaly:
    """Reload trained GANomaly models from the run folder (in a fresh kernel), in eval mode."""
    config, g, d, checkpoint = load_networks(run, METHOD, GanomalyConfig, device, which)
    m = checkpoint["metrics"]
    return TrainedGanomaly(g, d, config, checkpoint["epoch"], m.get("best_epoch", -1),
                           history=checkpoint["history"].get("steps", {}),
                           epoch_history=checkpoint["history"].get("epochs", {}),
                           train_seconds=m.get("train_seconds", 0.0))
