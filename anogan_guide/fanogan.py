"""f-AnoGAN's encoder (izi_f): trained after the GAN, G and D frozen, so that mapping an image
to the latent space is one forward pass, z = E(x) (optionally refined by a short search).

    encoder = train_encoder(split, gan, FanoganConfig(epochs=10), run, device)
    encoder = load_encoder(run, device)              # and its GAN, in a fresh kernel
    table = latent.score(encoder, split.test, mapping="encoder")
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from .anogan import TrainedGAN, load
from .data import OneClassSplit
from .latent import VALUE_RANGE, FrozenGAN
from .latentnames import encoder_method
from .nets import ConvEncoder, dcgan_init
from .runs import Run, config_from_dict, read_checkpoint
from .training import TrainingLoop, load_trained, total_train_seconds


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


def _izif(frozen: FrozenGAN, encoder: LatentEncoder, x: torch.Tensor,
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
    frozen = FrozenGAN(gan.generator, gan.discriminator).to(device)
    opt = torch.optim.Adam(encoder.parameters(), lr=config.lr, betas=(0.5, 0.999))
    shuffle = torch.Generator().manual_seed(config.seed)
    loop = TrainingLoop(run, method, asdict(config)
                        | {"image_size": split.image_size, "channels": split.channels}
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
    gan = load(run, device, gan_which, gan_loss=gan_loss)
    method = encoder_method(gan_loss)
    saved = read_checkpoint(run.checkpoint(method, which))["config"]
    encoder = LatentEncoder(saved["latent_dim"], saved["image_size"], saved["channels"]).to(device)
    checkpoint = load_trained(run, method, {"encoder": encoder}, which=which, map_location=device)
    metrics = checkpoint.get("metrics", {})
    hist = checkpoint.get("history", {})
    return TrainedEncoder(encoder, gan, FanoganConfig.from_dict(saved), method,
                          checkpoint["epoch"], metrics.get("best_epoch", checkpoint["epoch"]),
                          total_train_seconds(run, method, metrics), hist.get("steps", {}),
                          hist.get("epochs", {}))


