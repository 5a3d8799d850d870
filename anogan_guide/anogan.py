"""AnoGAN: a DCGAN (or WGAN-GP) trained on normal images, batched latent mapping, f-AnoGAN encoder.

    trained = train(split, AnoganConfig(epochs=15), run, device)       # 01_dcgan_training
    trained = load(run, device)                                          # 02, in a fresh kernel
    result = map_latent(trained.generator, trained.discriminator, x)     # x in [-1, 1]
    result.score, result.residual, result.discrimination, result.z      # one row per image

Latent mapping optimises one z per image with Adam, G and D frozen in eval mode. The loss of each
image is summed on its own, so the gradient of one image's z never depends on another image: a
batch of 256 images follows exactly the 256 optimisations one image at a time would, only faster.
"""

from __future__ import annotations

import copy
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageSet, OneClassSplit
from .nets import ConvEncoder, Discriminator, Generator, dcgan_init
from .runs import Run, config_from_dict, progress
from .training import TrainingLoop, load_trained

GAN_LOSSES = ("bce", "wgan-gp")
MAPPINGS = ("iterative", "encoder", "encoder+refine")
MAP_LR = 0.01  # Adam's step on z; see 02_latent_mapping for the comparison with 1e-3
MAP_ITERATIONS = 500  # the paper's number of mapping steps
LAMBDA = 0.1  # weight of the discrimination term (the paper's lambda)
VALUE_RANGE = (-1.0, 1.0)  # tanh generator: images in [-1, 1]


def gan_method(gan_loss: str) -> str:
    """The method name (checkpoints, metrics.json): "anogan" or "anogan-wgangp"."""
    _check_choice("gan_loss", gan_loss, GAN_LOSSES)
    return "anogan" if gan_loss == "bce" else "anogan-wgangp"


def encoder_method(gan_loss: str) -> str:
    """The f-AnoGAN encoder's method name: "fanogan" or "fanogan-wgangp"."""
    return "f" + gan_method(gan_loss)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} {value!r} is not known; use one of {', '.join(choices)}")


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
    seed: int = 0
    resume: bool = False

    def __post_init__(self) -> None:
        _check_choice("gan_loss", self.gan_loss, GAN_LOSSES)
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 (got {self.batch_size}); BatchNorm "
                             f"needs a batch, e.g. -p batch_size 64")

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
    """G and D for this image size and channel count (DCGAN init; a BN-free critic for wgan-gp)."""
    generator = Generator(config.latent_dim, image_size, channels).to(device)
    discriminator = Discriminator(image_size, channels, wgan=config.gan_loss == "wgan-gp")
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
    fixed_z = initial_latents(64, config.latent_dim, config.seed)
    loop = TrainingLoop(run, method, asdict(config) | _arch(split),
                        models={"generator": generator, "discriminator": discriminator},
                        optimizers={"generator": opt_g, "discriminator": opt_d},
                        epochs=config.epochs, resume=config.resume, arch_keys=ARCH_KEYS,
                        generators=(shuffle,), extra={"fixed_z": fixed_z})
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
                losses = _bce_step(generator, discriminator, opt_g, opt_d, real, noise)
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
        loop.end_epoch(val_loss=val_loss, images=samples, value_range=VALUE_RANGE)
    generator.eval()
    discriminator.eval()
    return TrainedGAN(generator, discriminator, config, method, loop.epoch, loop.best_epoch,
                      loop.train_seconds, loop.history, loop.epoch_history, fixed_z.cpu())


def _bce_step(generator, discriminator, opt_g, opt_d, real, noise) -> dict[str, torch.Tensor]:
    """The classic DCGAN step: D on real (label 1) and fake (label 0), then G non-saturating."""
    fake = generator(noise)
    d_real, d_fake = discriminator(real), discriminator(fake.detach())
    loss_d = (F.binary_cross_entropy_with_logits(d_real, torch.ones_like(d_real))
              + F.binary_cross_entropy_with_logits(d_fake, torch.zeros_like(d_fake)))
    opt_d.zero_grad(set_to_none=True)
    loss_d.backward()
    opt_d.step()
    d_gen = discriminator(fake)
    loss_g = F.binary_cross_entropy_with_logits(d_gen, torch.ones_like(d_gen))
    opt_g.zero_grad(set_to_none=True)
    loss_g.backward()
    opt_g.step()
    return {"loss_d": loss_d.detach(), "loss_g": loss_g.detach(),
            "d_real": torch.sigmoid(d_real).mean().detach(),
            "d_fake": torch.sigmoid(d_fake).mean().detach()}


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


def _total_seconds(run: Run, method: str, metrics: dict) -> float:
    """The whole training time (the last checkpoint's), also when the best epoch was earlier."""
    from .runs import read_checkpoint

    last = run.checkpoint(method, "last")
    if last.is_file():
        return float(read_checkpoint(last)["metrics"].get("train_seconds", 0.0))
    return float(metrics.get("train_seconds", 0.0))


def load(run: Run, device: str | torch.device = "cpu", which: str = "best", *,
         gan_loss: str = "bce") -> TrainedGAN:
    """Reload a trained GAN from model_saves/ in a fresh kernel (eval mode)."""
    from .runs import read_checkpoint

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
                      _total_seconds(run, method, metrics), hist.get("steps", {}),
                      hist.get("epochs", {}), checkpoint["extra"].get("fixed_z"))


# ---------------------------------------------------------------------------------------------
# Latent mapping


@dataclass
class LatentMap:
    """The result of mapping images to the latent space: one row per image."""

    z: torch.Tensor  # (N, latent_dim), the final z
    score: torch.Tensor  # (N,) (1 - lam) * residual + lam * discrimination
    residual: torch.Tensor  # (N,) sum |x - G(z)|
    discrimination: torch.Tensor  # (N,) sum |f(x) - f(G(z))|
    lam: float = LAMBDA

    def table(self) -> dict[str, torch.Tensor]:
        """The score table of the house interface (term -> per-image values, plus "score")."""
        return {"residual": self.residual, "discrimination": self.discrimination,
                "score": self.score}

    def subset(self, index) -> LatentMap:
        """The rows of some of the images (e.g. the test sample another mapping scored)."""
        return LatentMap(self.z[index], self.score[index], self.residual[index],
                         self.discrimination[index], self.lam)


def combine(residual: torch.Tensor, discrimination: torch.Tensor, lam: float) -> torch.Tensor:
    """The AnoGAN score from its two parts: (1 - lam) * residual + lam * discrimination."""
    return (1.0 - lam) * residual + lam * discrimination


def _fold_batchnorm(seq: nn.Sequential) -> nn.Sequential:
    """An eval-mode copy of `seq` with every conv + BatchNorm pair merged into one conv.

    In eval mode BatchNorm is a fixed per-channel affine map, so folding it into the preceding
    convolution's weights and bias computes the same function with fewer passes over memory."""
    mods, out, i = list(seq), [], 0
    while i < len(mods):
        m = mods[i]
        nxt = mods[i + 1] if i + 1 < len(mods) else None
        if isinstance(m, nn.Conv2d | nn.ConvTranspose2d) and isinstance(nxt, nn.BatchNorm2d) \
                and nxt.track_running_stats and m.groups == 1:
            conv = copy.deepcopy(m)
            with torch.no_grad():
                scale = (nxt.weight if nxt.affine else torch.ones_like(nxt.running_var)) / \
                    torch.sqrt(nxt.running_var + nxt.eps)
                shift = (nxt.bias if nxt.affine else torch.zeros_like(nxt.running_mean)) - \
                    nxt.running_mean * scale
                shape = (-1, 1, 1, 1) if isinstance(m, nn.Conv2d) else (1, -1, 1, 1)
                conv.weight.mul_(scale.view(shape))
                bias = shift if m.bias is None else m.bias * scale + shift
                conv.bias = nn.Parameter(bias.clone())
            out.append(conv)
            i += 2
        else:
            out.append(copy.deepcopy(m))
            i += 1
    return nn.Sequential(*out)


class _Frozen(nn.Module):
    """A frozen, eval-mode copy of G (z -> image) and of D's feature map (image -> f)."""

    def __init__(self, generator: nn.Module, discriminator: nn.Module) -> None:
        super().__init__()
        if isinstance(generator, Generator) and isinstance(discriminator, Discriminator):
            # our DCGAN: fold BatchNorm (eval mode) into the convolutions
            self.g = _fold_batchnorm(generator.decoder.net)
            self.f = _fold_batchnorm(discriminator.encoder.features)
            self.latent_shape: tuple[int, ...] = (generator.latent_dim, 1, 1)
        else:  # any other G / D with D.features(x): eval-mode copies
            self.g = _Call(copy.deepcopy(generator))
            self.f = _Call(copy.deepcopy(discriminator), "features")
            self.latent_shape = (getattr(generator, "latent_dim", None) or 100,)
        self.eval()
        self.requires_grad_(False)  # G and D are fixed: no weight gradients are ever computed
        self.to(memory_format=torch.channels_last)  # oneDNN's fast layout for these convs

    def generate(self, z: torch.Tensor) -> torch.Tensor:
        return self.g(z.view(len(z), *self.latent_shape))


class _Call(nn.Module):
    def __init__(self, module: nn.Module, method: str = "forward") -> None:
        super().__init__()
        self.module, self.method = module, method

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return getattr(self.module, self.method)(x)


def initial_latents(n: int, latent_dim: int, seed: int = 0) -> torch.Tensor:
    """The starting z ~ N(0, 1) of images 0..n-1: row i depends only on (seed, i), so an image
    starts from the same z whatever the batch size (or the number of images after it)."""
    import numpy as np

    out = torch.empty(n, latent_dim)
    gen = torch.Generator()
    for i, state in enumerate(np.random.SeedSequence(seed).spawn(n)):
        gen.manual_seed(int(state.generate_state(1, np.uint64)[0]) & (2**63 - 1))
        out[i] = torch.randn(latent_dim, generator=gen)
    return out


def _parts(frozen: _Frozen, x: torch.Tensor, fx: torch.Tensor,
           z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    gz = frozen.generate(z)
    residual = (x - gz).abs().flatten(1).sum(1)
    discrimination = (fx - frozen.f(gz)).abs().flatten(1).sum(1)
    return residual, discrimination


@contextmanager
def _flush_denormals():
    """Treat denormal floats as zero on the CPU for a while: a trained generator saturates its
    Tanh on the background, and the tiny gradients there would otherwise run many times slower."""
    flushed = torch.set_flush_denormal(True)
    try:
        yield
    finally:
        if flushed:
            torch.set_flush_denormal(False)


def map_latent(generator: nn.Module, discriminator: nn.Module, images: torch.Tensor, *,
               iterations: int = MAP_ITERATIONS, lr: float = MAP_LR, lam: float = LAMBDA,
               batch_size: int = 256, seed: int = 0, z0: torch.Tensor | None = None,
               progress_bar: bool = True) -> LatentMap:
    """AnoGAN latent mapping: for each image x (in [-1, 1]) find z minimising
    (1 - lam) * sum|x - G(z)| + lam * sum|f(x) - f(G(z))| by Adam on z, G and D frozen."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lam must lie in [0, 1] (got {lam}); the paper uses 0.1")
    if iterations < 0 or batch_size < 1:
        raise ValueError(f"iterations must be >= 0 and batch_size >= 1 (got {iterations}, "
                         f"{batch_size})")
    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise TypeError("images must be a float tensor shaped (N, C, H, W) in [-1, 1]; for an "
                        "ImageSet pass images.in_range(-1, 1).tensors()")
    device = next(generator.parameters()).device
    frozen = _Frozen(generator, discriminator).to(device)
    n = len(images)
    latent_dim = frozen.latent_shape[0]
    start = initial_latents(n, latent_dim, seed) if z0 is None else z0.detach().float().cpu()
    if start.shape != (n, latent_dim):
        raise ValueError(f"z0 must be shaped ({n}, {latent_dim}), got {tuple(start.shape)}")
    zs, residuals, discriminations = [], [], []
    bar = progress(total=n, desc="latent mapping", unit="img", leave=False,
                   **({"disable": True} if not progress_bar else {}))
    with torch.enable_grad(), _flush_denormals():
        for lo in range(0, n, batch_size):
            x = images[lo:lo + batch_size].to(device, torch.float32)
            x = x.contiguous(memory_format=torch.channels_last)
            with torch.no_grad():
                fx = frozen.f(x)  # f(x) does not change while z moves: compute it once
            z = start[lo:lo + batch_size].to(device, copy=True).requires_grad_(True)
            opt = torch.optim.Adam([z], lr=lr)
            for _ in range(iterations):
                residual, discrimination = _parts(frozen, x, fx, z)
                # summed over images: each z gets exactly its own image's gradient
                loss = combine(residual, discrimination, lam).sum()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            with torch.no_grad():
                residual, discrimination = _parts(frozen, x, fx, z)
            zs.append(z.detach().cpu())
            residuals.append(residual.cpu())
            discriminations.append(discrimination.cpu())
            bar.update(len(x))
    bar.close()
    residual, discrimination = torch.cat(residuals), torch.cat(discriminations)
    return LatentMap(torch.cat(zs) if zs else start, combine(residual, discrimination, lam),
                     residual, discrimination, lam)


# ---------------------------------------------------------------------------------------------
# f-AnoGAN: an encoder trained after the GAN (izi_f), so that mapping is one forward pass


class LatentEncoder(nn.Module):
    """f-AnoGAN's encoder E: image -> z, a DCGAN-discriminator-shaped convolutional network."""

    def __init__(self, latent_dim: int = 100, image_size: int = 32, channels: int = 1) -> None:
        super().__init__()
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels
        self.net = ConvEncoder(image_size, channels, latent_dim, who="the f-AnoGAN encoder")
        self.apply(dcgan_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).flatten(1)


@dataclass
class FanoganConfig:
    """f-AnoGAN encoder training (izi_f) settings, json-safe."""

    epochs: int = 10
    batch_size: int = 64
    lr: float = 1e-3
    kappa: float = 1.0  # weight of the feature term of izi_f
    seed: int = 0
    resume: bool = False

    @classmethod
    def from_dict(cls, data: dict) -> FanoganConfig:
        return config_from_dict(cls, data)


@dataclass
class TrainedEncoder:
    """An f-AnoGAN encoder with the GAN it inverts (all in eval mode)."""

    encoder: LatentEncoder
    gan: TrainedGAN
    config: FanoganConfig
    method: str
    epoch: int
    best_epoch: int
    train_seconds: float
    history: dict[str, list[float]] = field(default_factory=dict)
    epoch_history: dict[str, list[float]] = field(default_factory=dict)


def _izif(frozen: _Frozen, encoder: LatentEncoder, x: torch.Tensor,
          kappa: float) -> torch.Tensor:
    """izi_f: mean (x - G(E(x)))^2 + kappa * mean (f(x) - f(G(E(x))))^2, over the batch."""
    x = x.contiguous(memory_format=torch.channels_last)
    gx = frozen.generate(encoder(x))
    with torch.no_grad():
        fx = frozen.f(x)
    return F.mse_loss(gx, x) + kappa * F.mse_loss(frozen.f(gx), fx)


def train_encoder(split: OneClassSplit, gan: TrainedGAN, config: FanoganConfig, run: Run,
                  device: str | torch.device = "cpu") -> TrainedEncoder:
    """Train the f-AnoGAN encoder on the normal training images, G and D frozen (izi_f); the
    best epoch is the one with the lowest izi_f on the validation normals."""
    device = torch.device(device)
    method = encoder_method(gan.config.gan_loss)
    torch.manual_seed(config.seed)
    encoder = LatentEncoder(gan.config.latent_dim, split.image_size, split.channels).to(device)
    frozen = _Frozen(gan.generator, gan.discriminator).to(device)
    opt = torch.optim.Adam(encoder.parameters(), lr=config.lr, betas=(0.5, 0.999))
    shuffle = torch.Generator().manual_seed(config.seed)
    loop = TrainingLoop(run, method, asdict(config) | _arch(split)
                        | {"latent_dim": gan.config.latent_dim, "gan": gan.method,
                           "gan_epoch": gan.epoch},
                        models={"encoder": encoder}, optimizers={"encoder": opt},
                        epochs=config.epochs, resume=config.resume,
                        arch_keys=("image_size", "channels", "latent_dim", "gan", "gan_epoch"),
                        generators=(shuffle,))
    train_set = split.train.in_range(*VALUE_RANGE)
    loader = train_set.loader(config.batch_size, shuffle=True, generator=shuffle)
    val_x = split.val.in_range(*VALUE_RANGE).tensors()
    for _epoch in loop.epochs():
        encoder.train()
        for step, (x, _) in loop.steps(loader):
            loss = _izif(frozen, encoder, x.to(device), config.kappa)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loop.record(step, izi_f=loss.detach())
        encoder.eval()
        with torch.no_grad():
            val_loss = sum(float(_izif(frozen, encoder, xb.to(device), config.kappa)) * len(xb)
                           for xb in val_x.split(256)) / max(1, len(val_x))
            shown = val_x[:32].to(device)
            pairs = torch.stack([shown, frozen.generate(encoder(
                shown.contiguous(memory_format=torch.channels_last))).contiguous()], 1)
        loop.end_epoch(val_loss=val_loss, images=pairs.flatten(0, 1), value_range=VALUE_RANGE)
    encoder.eval()
    return TrainedEncoder(encoder, gan, config, method, loop.epoch, loop.best_epoch,
                          loop.train_seconds, loop.history, loop.epoch_history)


def load_encoder(run: Run, device: str | torch.device = "cpu", which: str = "best", *,
                 gan_loss: str = "bce", gan_which: str = "best") -> TrainedEncoder:
    """Reload an f-AnoGAN encoder and its GAN from model_saves/ (eval mode)."""
    from .runs import read_checkpoint

    gan = load(run, device, gan_which, gan_loss=gan_loss)
    method = encoder_method(gan_loss)
    saved = read_checkpoint(run.checkpoint(method, which))["config"]
    encoder = LatentEncoder(saved["latent_dim"], saved["image_size"], saved["channels"]).to(device)
    checkpoint = load_trained(run, method, {"encoder": encoder}, which=which, map_location=device)
    metrics = checkpoint.get("metrics", {})
    hist = checkpoint.get("history", {})
    return TrainedEncoder(encoder, gan, FanoganConfig.from_dict(saved), method,
                          checkpoint["epoch"], metrics.get("best_epoch", checkpoint["epoch"]),
                          _total_seconds(run, method, metrics), hist.get("steps", {}),
                          hist.get("epochs", {}))


@torch.no_grad()
def encode(encoder: LatentEncoder, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """z = E(x) for every image, in eval mode, batched."""
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device
    out = [encoder(x.to(device, torch.float32)).cpu() for x in images.split(batch_size)]
    encoder.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, encoder.latent_dim)


# ---------------------------------------------------------------------------------------------
# Scoring: the house interface (score table per image)


def _as_images(images) -> torch.Tensor:
    if isinstance(images, ImageSet):
        return images.in_range(*VALUE_RANGE).tensors()
    if isinstance(images, torch.Tensor):
        return images
    raise TypeError("images must be an ImageSet or a float tensor (N, C, H, W) in [-1, 1]")


def map_images(model: TrainedGAN | TrainedEncoder, images, *, mapping: str = "iterative",
               iterations: int = MAP_ITERATIONS, refine_iterations: int = 50,
               lr: float = MAP_LR, lam: float = LAMBDA, batch_size: int = 256,
               seed: int = 0, progress_bar: bool = True) -> LatentMap:
    """Map images with one of three mappings: "iterative" (AnoGAN, `iterations` Adam steps from a
    seeded random z), "encoder" (f-AnoGAN, z = E(x), no search) or "encoder+refine" (E(x), then
    `refine_iterations` Adam steps)."""
    _check_choice("mapping", mapping, MAPPINGS)
    x = _as_images(images)
    if mapping == "iterative":
        gan = model.gan if isinstance(model, TrainedEncoder) else model
        return map_latent(gan.generator, gan.discriminator, x, iterations=iterations, lr=lr,
                          lam=lam, batch_size=batch_size, seed=seed, progress_bar=progress_bar)
    if not isinstance(model, TrainedEncoder):
        raise ValueError(f"mapping {mapping!r} needs a trained f-AnoGAN encoder "
                         f"(train_encoder or load_encoder), not a bare GAN")
    z0 = encode(model.encoder, x, batch_size)
    steps = 0 if mapping == "encoder" else refine_iterations
    return map_latent(model.gan.generator, model.gan.discriminator, x, iterations=steps, lr=lr,
                      lam=lam, batch_size=batch_size, seed=seed, z0=z0, progress_bar=progress_bar)


def score(model: TrainedGAN | TrainedEncoder, images, **kwargs) -> dict[str, torch.Tensor]:
    """The score table {"residual", "discrimination", "score"} (higher = more anomalous);
    keyword arguments as for `map_images`."""
    return map_images(model, images, **kwargs).table()


def timed_map(model: TrainedGAN | TrainedEncoder, images, **kwargs) -> tuple[LatentMap, float]:
    """map_images and the seconds it took (the encoder's forward pass included)."""
    start = time.perf_counter()
    result = map_images(model, images, **kwargs)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start


@torch.no_grad()
def reconstruct(gan: TrainedGAN, z: torch.Tensor) -> torch.Tensor:
    """G(z) in eval mode (for pairs of originals and their closest generated images)."""
    device = next(gan.generator.parameters()).device
    was_training = gan.generator.training
    gan.generator.eval()
    out = gan.generator(z.to(device)).cpu()
    gan.generator.train(was_training)
    return out


def parameter_count(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters())


def save_examples(run: Run, gan: TrainedGAN, images: torch.Tensor, result: LatentMap, *,
                  n: int = 8, prefix: str = "anogan"):
    """Original, G(z) and residual map |x - G(z)| (three rows) for the `n` lowest-scored (most
    normal-looking) and `n` highest-scored images; saved as PNGs to test_imgs/. Returns the
    figure and the paths."""
    import matplotlib.pyplot as plt

    from .plots import image_grid
    from .runs import save_image_grid

    order = torch.argsort(result.score)
    picks = {"lowest": order[:n], "highest": order.flip(0)[:n]}
    fig, axes = plt.subplots(2, 1, figsize=(min(12, 1.3 * n), 6.4))
    paths = []
    for ax, (name, idx) in zip(axes, picks.items(), strict=True):
        x = images[idx].float()
        gz = reconstruct(gan, result.z[idx])
        rows = torch.cat([(x + 1) / 2, (gz + 1) / 2, (x - gz).abs() / 2])  # all in [0, 1]
        path = run.test_imgs / f"{prefix}_{name}_scores.png"
        save_image_grid(rows, path, nrow=len(idx))
        paths.append(path)
        scores = ", ".join(f"{float(s):.0f}" for s in result.score[idx])
        image_grid(rows, nrow=len(idx), ax=ax,
                   title=f"{name} scores ({scores}): original / G(z) / |x - G(z)|")
    fig.tight_layout()
    return fig, paths
