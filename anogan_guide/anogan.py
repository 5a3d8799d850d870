"""AnoGAN's GAN: a DCGAN (or WGAN-GP) trained on normal images only, saved and reloaded.

    trained = train(split, AnoganConfig(epochs=15), run, device)       # 01_dcgan_training
    trained = load(run, device)                                          # 02, in a fresh kernel

The best epoch is the one whose generator maps the validation normals best (`latent.map_latent`,
`val_iterations` steps): validation normals only. Mapping test images: `latent`; the f-AnoGAN
encoder: `fanogan`.

With `w_rot > 0` (bce only) the discriminator also learns, SS-GAN style, which quarter turn a
normal image was shown in (`rothead.py`): L_D += w_rot times its rotation head's loss on the real
batch's four turns, and L_G += w_rot_g times the head's loss on the fakes' turns. The head's
per-image loss `l_rot` then joins the score table of the latent mapping (`latentscore.ScoreRule`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from typing import ClassVar

import torch
import torch.nn.functional as F

from . import rothead
from .data import OneClassSplit
from .latent import LAMBDA, MAP_LR, VALUE_RANGE, initial_latents, map_latent
from .latentnames import GAN_LOSSES, gan_method
from .latentnames import check_choice as _check_choice
from .nets import Discriminator, Generator
from .runs import Run, config_from_dict, read_checkpoint
from .training import TrainingLoop, load_trained, total_train_seconds

# ---------------------------------------------------------------------------------------------
# Configuration


@dataclass
class AnoganConfig:
    """GAN training settings (json-safe). None picks the published default of `gan_loss`."""

    epochs: int = 15
    batch_size: int = 64
    lr: float | None = None  # None: 2e-4 (bce) or 1e-4 (wgan-gp)
    beta1: float = 0.5
    beta2: float | None = None  # None: 0.999 (bce) or 0.9 (wgan-gp)
    latent_dim: int = 100
    gan_loss: str = "bce"  # "bce" (classic DCGAN) or "wgan-gp"
    n_critic: int = 5  # wgan-gp: critic steps per generator step
    gp_weight: float = 10.0  # wgan-gp: gradient penalty weight
    val_images: int = 64  # validation normals mapped after each epoch to pick the best epoch
    val_iterations: int = 100  # mapping steps for that validation score (0: keep the last epoch)
    map_lr: float = MAP_LR
    lam: float = LAMBDA
    w_rot: float = 0.0  # D's rotation loss on the normals' four turns (SS-GAN); 0: no head
    w_rot_g: float = 0.0  # G's: the rotation loss of its samples through D's head
    rot_hflip: bool = True  # mirror the rotation loss's images left-right at random
    rot_flips: bool = True  # l_rot = mean of the image's and its mirror image's rotation loss
    seed: int = 0
    resume: bool = False

    # keys that checkpoints made before they existed lack: recorded only when not at their
    # default, so such a checkpoint still resumes and reloads as what it was
    LATER_KEYS: ClassVar[tuple[str, ...]] = ("w_rot", "w_rot_g", "rot_hflip", "rot_flips")

    def __post_init__(self) -> None:
        _check_choice("gan_loss", self.gan_loss, GAN_LOSSES)
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 (got {self.batch_size}); BatchNorm "
                             f"needs a batch, e.g. -p batch_size 64")
        if self.w_rot < 0 or self.w_rot_g < 0 or (self.w_rot_g and not self.w_rot):
            raise ValueError(f"w_rot={self.w_rot}, w_rot_g={self.w_rot_g}: the weights of the "
                             f"rotation losses are >= 0, and w_rot_g needs the head that "
                             f"w_rot > 0 trains (e.g. -p w_rot 1)")
        if self.w_rot and self.gan_loss != "bce":
            raise ValueError(f"the rotation head (w_rot={self.w_rot}) is trained with gan_loss "
                             f"bce only; pass -p gan_loss bce, or -p w_rot 0 for {self.gan_loss}")

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else (2e-4 if self.gan_loss == "bce" else 1e-4)

    @property
    def betas(self) -> tuple[float, float]:
        beta2 = self.beta2 if self.beta2 is not None else (0.999 if self.gan_loss == "bce" else 0.9)
        return (self.beta1, beta2)

    @classmethod
    def from_dict(cls, data: dict) -> AnoganConfig:
        return config_from_dict(cls, data)


def checkpoint_config(config: AnoganConfig, split: OneClassSplit) -> dict:
    """The config as a checkpoint records it, with the image size and channels; LATER_KEYS only
    where they differ from their default, so a run without the head records what a run made
    before the head existed did (and such a checkpoint resumes)."""
    defaults = {f.name: f.default for f in fields(config)}
    saved = {k: v for k, v in asdict(config).items()
             if k not in config.LATER_KEYS or v != defaults[k]}
    return saved | _arch(split)


@dataclass
class TrainedGAN:
    """A trained (or reloaded) GAN: G and D in eval mode plus what training recorded."""

    generator: Generator
    discriminator: Discriminator
    config: AnoganConfig
    method: str
    epoch: int
    best_epoch: int
    train_seconds: float
    history: dict[str, list[float]] = field(default_factory=dict)  # per step
    epoch_history: dict[str, list[float]] = field(default_factory=dict)  # per epoch
    fixed_z: torch.Tensor | None = None  # the z of the progress images


def build_gan(image_size: int, channels: int, config: AnoganConfig,
              device: str | torch.device = "cpu") -> tuple[Generator, Discriminator]:
    """G and D for this image size and channel count (DCGAN init; a BN-free critic for wgan-gp;
    D with the rotation head when w_rot > 0)."""
    generator = Generator(config.latent_dim, image_size, channels).to(device)
    discriminator = Discriminator(image_size, channels, wgan=config.gan_loss == "wgan-gp",
                                  rotation_head=config.w_rot > 0)
    return generator, discriminator.to(device)


def _arch(split_or_config) -> dict:
    return {"image_size": split_or_config.image_size, "channels": split_or_config.channels}


ARCH_KEYS = ("image_size", "channels", "latent_dim", "gan_loss")


# ---------------------------------------------------------------------------------------------
# GAN training


def _gradient_penalty(critic: Discriminator, real: torch.Tensor,
                      fake: torch.Tensor) -> torch.Tensor:
    """WGAN-GP: (||grad critic(x_hat)|| - 1)^2 on random interpolates of real and fake."""
    eps = torch.rand(len(real), 1, 1, 1, device=real.device)
    mixed = (eps * real + (1 - eps) * fake).requires_grad_(True)
    grad, = torch.autograd.grad(critic(mixed).sum(), mixed, create_graph=True)
    return ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()


def train(split: OneClassSplit, config: AnoganConfig, run: Run,
          device: str | torch.device = "cpu") -> TrainedGAN:
    """Train the GAN on the normal training images only; resumable, seeded, checkpointed."""
    device = torch.device(device)
    method = gan_method(config.gan_loss)
    torch.manual_seed(config.seed)  # the networks' initial weights
    generator, discriminator = build_gan(split.image_size, split.channels, config, device)
    opt_g = torch.optim.Adam(generator.parameters(), lr=config.learning_rate, betas=config.betas)
    opt_d = torch.optim.Adam(discriminator.parameters(), lr=config.learning_rate,
                             betas=config.betas)
    shuffle = torch.Generator().manual_seed(config.seed)
    flips = rothead.rotation_flips(config)
    fixed_z = initial_latents(64, config.latent_dim, config.seed)
    loop = TrainingLoop(run, method, checkpoint_config(config, split),
                        models={"generator": generator, "discriminator": discriminator},
                        optimizers={"generator": opt_g, "discriminator": opt_d},
                        epochs=config.epochs, resume=config.resume, arch_keys=ARCH_KEYS,
                        generators=(shuffle, *flips), extra={"fixed_z": fixed_z})
    fixed_z = loop.extra["fixed_z"].to(device)
    train_set = split.train.in_range(*VALUE_RANGE)
    if len(train_set) < 2:
        raise ValueError(f"only {len(train_set)} training images; a GAN needs at least 2")
    # a last batch of one image would break BatchNorm's batch statistics: drop it then only
    loader = train_set.loader(config.batch_size, shuffle=True, generator=shuffle,
                              drop_last=len(train_set) % config.batch_size == 1)
    val_x = split.val.in_range(*VALUE_RANGE).tensors()[:config.val_images]
    wgan = config.gan_loss == "wgan-gp"
    for _epoch in loop.epochs():
        generator.train()
        discriminator.train()
        for step, (real, _) in loop.steps(loader):
            real = real.to(device)
            noise = torch.randn(len(real), config.latent_dim, device=device)
            if wgan:
                # count critic steps over the whole run (kept in the history, so across epochs
                # and resumes): every n_critic-th one is followed by a generator step
                critic_steps = len(loop.history.get("loss_d", ())) + 1
                losses = _wgan_step(generator, discriminator, opt_g, opt_d, real, noise, config,
                                    update_generator=critic_steps % config.n_critic == 0)
            else:
                losses = _bce_step(generator, discriminator, opt_g, opt_d, real, noise, config,
                                   *flips)
            loop.record(step, **losses)
        generator.eval()
        with torch.no_grad():
            samples = generator(fixed_z)
        val_loss = None
        if config.val_iterations > 0 and len(val_x) > 0:
            val_loss = float(map_latent(generator, discriminator, val_x,
                                        iterations=config.val_iterations, lr=config.map_lr,
                                        lam=config.lam, seed=config.seed,
                                        progress_bar=False).score.mean())
        if discriminator.has_rotation_head and len(val_x) > 0:  # what the head learnt (eval mode)
            val_rot = rothead.eval_terms(discriminator, val_x, config.rot_flips)["l_rot"]
            loop.epoch_history.setdefault("val_l_rot", []).append(float(val_rot.mean()))
        loop.end_epoch(val_loss=val_loss, images=samples, value_range=VALUE_RANGE)
    generator.eval()
    discriminator.eval()
    return TrainedGAN(generator, discriminator, config, method, loop.epoch, loop.best_epoch,
                      loop.train_seconds, loop.history, loop.epoch_history, fixed_z.cpu())


def _bce_step(generator, discriminator, opt_g, opt_d, real, noise, config: AnoganConfig,
              flips: torch.Generator | None = None) -> dict[str, torch.Tensor]:
    """The classic DCGAN step: D on real (label 1) and fake (label 0), then G non-saturating.
    With w_rot > 0, D's loss adds w_rot times its rotation head's loss on the four turns of the
    real batch (mirrored at random by `flips`), and with w_rot_g G's adds w_rot_g times the
    head's loss on the fakes' turns (SS-GAN). loss_d and loss_g are the adversarial parts; the
    head's are d_rot, acc_rot and g_rot."""
    fake = generator(noise)
    d_real, d_fake = discriminator(real), discriminator(fake.detach())
    loss_d = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
              + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
    total_d, head = loss_d, {}
    if config.w_rot:
        d_rot, accuracy = rothead.rotation_loss(discriminator, real, flips)
        total_d = loss_d + config.w_rot * d_rot
        head = {"d_rot": d_rot.detach(), "acc_rot": accuracy}
    opt_d.zero_grad(set_to_none=True)
    total_d.backward()
    opt_d.step()
    d_gen = discriminator(fake)
    loss_g = F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen))
    total_g = loss_g
    if config.w_rot_g:  # SS-GAN: G's samples should show their turns to D's head
        g_rot = rothead.rotation_loss(discriminator, fake)[0]
        total_g = loss_g + config.w_rot_g * g_rot
        head["g_rot"] = g_rot.detach()
    opt_g.zero_grad(set_to_none=True)
    total_g.backward()
    opt_g.step()
    return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(),
            "d_real": torch.sigmoid(d_real).mean().detach(),
            "d_fake": torch.sigmoid(d_fake).mean().detach(), **head}


def _wgan_step(generator, critic, opt_g, opt_d, real, noise, config: AnoganConfig, *,
               update_generator: bool) -> dict[str, torch.Tensor]:
    """One critic step (Wasserstein loss + gradient penalty); every n_critic-th, a G step."""
    with torch.no_grad():
        fake = generator(noise)
    wasserstein = critic(fake).mean() - critic(real).mean()
    penalty = _gradient_penalty(critic, real, fake)
    loss_d = wasserstein + config.gp_weight * penalty
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    losses = {"loss_d": loss_d.detach(), "gp": penalty.detach(),
              "wasserstein": -wasserstein.detach()}
    if update_generator:
        for p in critic.parameters():
            p.requires_grad_(False)  # no critic weight gradients during the G step
        loss_g = -critic(generator(noise)).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        for p in critic.parameters():
            p.requires_grad_(True)
        losses["loss_g"] = loss_g.detach()
    return losses



def load(run: Run, device: str | torch.device = "cpu", which: str = "best", *,
         gan_loss: str = "bce") -> TrainedGAN:
    """Reload a trained GAN from model_saves/ in a fresh kernel (eval mode); D has the rotation
    head when the recorded config trained one (w_rot > 0; older checkpoints lack the key)."""
    method = gan_method(gan_loss)
    saved = read_checkpoint(run.checkpoint(method, which))
    config = AnoganConfig.from_dict(saved["config"])
    generator, discriminator = build_gan(saved["config"]["image_size"],
                                         saved["config"]["channels"], config, device)
    checkpoint = load_trained(run, method, {"generator": generator,
                                            "discriminator": discriminator},
                              which=which, map_location=device)
    hist = checkpoint.get("history", {})
    metrics = checkpoint.get("metrics", {})
    return TrainedGAN(generator, discriminator, config, method, checkpoint["epoch"],
                      metrics.get("best_epoch", checkpoint["epoch"]),
                      total_train_seconds(run, method, metrics), hist.get("steps", {}),
                      hist.get("epochs", {}), checkpoint["extra"].get("fixed_z"))


