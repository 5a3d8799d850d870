"""The networks only (no training code): DCGAN G/D, GANomaly G/D, the GradCon autoencoder and the
rotation classifier.

DCGAN-style networks (DCGAN, GANomaly) need a power-of-two image size: depth follows the size,
from the 4x4 bottleneck up (16: 2 up-sampling blocks, 32: 3, 64: 4).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

DCGAN_SIZES = (16, 32, 64)


def _check_power_of_two(image_size: int, who: str) -> int:
    if image_size not in DCGAN_SIZES:
        sizes = ", ".join(map(str, DCGAN_SIZES))
        raise ValueError(f"{who} needs a power-of-two image_size ({sizes})"
                         f"; got {image_size} - use image_size 32 (MNIST is padded/resized to it)")
    return int(math.log2(image_size // 4))  # number of stride-2 blocks


@contextmanager
def eval_mode(*modules: nn.Module) -> Iterator[None]:
    """Eval mode for the duration of a `with` block (BatchNorm uses its running statistics, so an
    image's score does not depend on the other images in its batch); each module's own mode is
    restored after, also when the block raises."""
    modes = [module.training for module in modules]
    for module in modules:
        module.eval()
    try:
        yield
    finally:
        for module, mode in zip(modules, modes, strict=True):
            module.train(mode)


def dcgan_init(module: nn.Module) -> None:
    """DCGAN weight init: conv weights N(0, 0.02), BatchNorm weights N(1, 0.02), biases 0."""
    if isinstance(module, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _widths(blocks: int, base: int = 64) -> list[int]:
    """Channel widths of the stride-2 blocks, image side first: 64, 128, 256, ..."""
    return [base * 2**i for i in range(blocks)]


class ConvEncoder(nn.Module):
    """x (C, S, S) -> feature map (W, 4, 4) -> `out_dim` x 1 x 1. Conv 4/2/1 blocks with
    LeakyReLU(0.2); BatchNorm after all but the first block unless `batch_norm=False`;
    `base` is the first block's width (doubled per block)."""

    def __init__(self, image_size: int, channels: int, out_dim: int, batch_norm: bool = True,
                 who: str = "the encoder", base: int = 64) -> None:
        super().__init__()
        blocks = _check_power_of_two(image_size, who)
        widths = _widths(blocks, base)
        layers: list[nn.Module] = []
        prev = channels
        for i, w in enumerate(widths):
            layers.append(nn.Conv2d(prev, w, 4, 2, 1, bias=False))
            if batch_norm and i > 0:
                layers.append(nn.BatchNorm2d(w))
            layers.append(nn.LeakyReLU(0.2, inplace=True))
            prev = w
        self.features = nn.Sequential(*layers)
        self.head = nn.Conv2d(prev, out_dim, 4, 1, 0, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


class ConvDecoder(nn.Module):
    """z (latent_dim x 1 x 1) -> image (C, S, S) in [-1, 1]: ConvTranspose blocks with
    BatchNorm + ReLU and a Tanh output (the DCGAN generator); `base` as for ConvEncoder."""

    def __init__(self, image_size: int, channels: int, latent_dim: int,
                 who: str = "the decoder", base: int = 64) -> None:
        super().__init__()
        blocks = _check_power_of_two(image_size, who)
        widths = _widths(blocks, base)[::-1]
        layers: list[nn.Module] = [nn.ConvTranspose2d(latent_dim, widths[0], 4, 1, 0, bias=False),
                                   nn.BatchNorm2d(widths[0]), nn.ReLU(True)]
        for w_in, w_out in zip(widths, widths[1:], strict=False):
            layers += [nn.ConvTranspose2d(w_in, w_out, 4, 2, 1, bias=False), nn.BatchNorm2d(w_out),
                       nn.ReLU(True)]
        layers += [nn.ConvTranspose2d(widths[-1], channels, 4, 2, 1, bias=False), nn.Tanh()]
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z)


# ---------------------------------------------------------------------------------------------
# DCGAN (AnoGAN)


class Generator(nn.Module):
    """DCGAN generator: z ~ N(0, 1) of `latent_dim` -> image in [-1, 1]."""

    def __init__(self, latent_dim: int = 100, image_size: int = 32, channels: int = 1) -> None:
        super().__init__()
        self.latent_dim, self.image_size, self.channels = latent_dim, image_size, channels
        self.decoder = ConvDecoder(image_size, channels, latent_dim, who="the DCGAN generator")
        self.apply(dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z.view(len(z), self.latent_dim, 1, 1))


class Discriminator(nn.Module):
    """DCGAN discriminator (or, with `wgan=True`, a WGAN-GP critic without BatchNorm); `width`
    is the first block's channel count (64 as published).

    `features(x)` is the last feature map, used by AnoGAN's discrimination loss and f-AnoGAN;
    `forward(x)` returns one logit (critic value) per image.

    With `rotation_head=True` a second head, SS-GAN style (Chen et al., CVPR 2019), reads the
    same 4x4 feature map: a 4x4 convolution to 4 logits, which of the quarter turns the image
    was shown in (`rotation_logits`, trained and scored by `rothead`). Without it the module (and
    its state dict) is the published discriminator, so checkpoints made before the head existed
    load unchanged."""

    def __init__(self, image_size: int = 32, channels: int = 1, wgan: bool = False,
                 rotation_head: bool = False, *, width: int = 64,
                 who: str = "the DCGAN discriminator") -> None:
        super().__init__()
        self.image_size, self.channels, self.wgan, self.width = image_size, channels, wgan, width
        self.encoder = ConvEncoder(image_size, channels, 1, batch_norm=not wgan, who=who,
                                   base=width)
        if rotation_head:
            self.rotation = nn.Conv2d(self.encoder.head.in_channels, 4, 4, 1, 0)
        self.apply(dcgan_init)

    @property
    def has_rotation_head(self) -> bool:
        return hasattr(self, "rotation")

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.encoder.head(self.features(x)).flatten()

    def rotation_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 4) logits of the quarter turn each image was shown in."""
        if not self.has_rotation_head:
            raise ValueError("this discriminator has no rotation head; train with w_rot > 0 "
                             "(e.g. -p w_rot 1) to give it one")
        return self.rotation(self.features(x)).flatten(1)


# ---------------------------------------------------------------------------------------------
# GANomaly


class GanomalyGenerator(nn.Module):
    """Encoder E1 -> decoder -> encoder E2, separate weights: returns (x_hat, z, z_hat).
    `width` is the first block's channel count (64 as published; smaller is faster)."""

    def __init__(self, image_size: int = 32, channels: int = 1, latent_dim: int = 100,
                 width: int = 64) -> None:
        super().__init__()
        self.image_size, self.channels, self.latent_dim = image_size, channels, latent_dim
        self.width = width
        self.encoder1 = ConvEncoder(image_size, channels, latent_dim, who="GANomaly", base=width)
        self.decoder = ConvDecoder(image_size, channels, latent_dim, who="GANomaly", base=width)
        self.encoder2 = ConvEncoder(image_size, channels, latent_dim, who="GANomaly", base=width)
        self.apply(dcgan_init)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        z = self.encoder1(x)
        x_hat = self.decoder(z)
        z_hat = self.encoder2(x_hat)
        return x_hat, z.flatten(1), z_hat.flatten(1)


class GanomalyDiscriminator(Discriminator):
    """GANomaly's discriminator: the DCGAN discriminator (first block `width` channels, with
    BatchNorm); `features` (its last feature map) feeds L_adv, `forward` gives one logit per
    image, and `rotation_head=True` adds the DCGAN discriminator's rotation head."""

    def __init__(self, image_size: int = 32, channels: int = 1, width: int = 64,
                 rotation_head: bool = False) -> None:
        super().__init__(image_size, channels, rotation_head=rotation_head, width=width,
                         who="the GANomaly discriminator")


# ---------------------------------------------------------------------------------------------
# GradCon


GRADCON_WIDTHS = (32, 32, 64, 64)


class GradConAE(nn.Module):
    """GradCon's convolutional autoencoder, inputs in [0, 1]: 4 x Conv(k4, s2, p2) + ReLU
    (32/32/64/64 channels), mirrored by 4 ConvTranspose layers and a Sigmoid. At 28x28 gray it
    has 230,721 parameters. Output padding makes every decoder size mirror the encoder's."""

    def __init__(self, image_size: int = 28, channels: int = 1) -> None:
        super().__init__()
        self.image_size, self.channels = image_size, channels
        sizes = [image_size]
        for _ in GRADCON_WIDTHS:
            sizes.append((sizes[-1] + 2 * 2 - 4) // 2 + 1)
        enc: list[nn.Module] = []
        prev = channels
        for w in GRADCON_WIDTHS:
            enc += [nn.Conv2d(prev, w, 4, stride=2, padding=2), nn.ReLU(True)]
            prev = w
        dec: list[nn.Module] = []
        outs = list(GRADCON_WIDTHS[::-1][1:]) + [channels]
        for i, w in enumerate(outs):
            size_in, size_out = sizes[-1 - i], sizes[-2 - i]
            pad = size_out - ((size_in - 1) * 2 - 4 + 4)
            dec += [nn.ConvTranspose2d(prev, w, 4, stride=2, padding=2, output_padding=pad),
                    nn.ReLU(True) if i < len(outs) - 1 else nn.Sigmoid()]
            prev = w
        self.encoder = nn.Sequential(*enc)
        self.decoder = nn.Sequential(*dec)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))

    def gradient_layers(self) -> list[str]:
        """Names (as in named_parameters) of the decoder's transposed-conv weights."""
        return [f"decoder.{i}.weight" for i, m in enumerate(self.decoder)
                if isinstance(m, nn.ConvTranspose2d)]


# ---------------------------------------------------------------------------------------------
# Rotation classifier (RotNet-style self-supervision, rotnet.py)


class RotationClassifier(nn.Module):
    """A small VGG-style classifier of the four quarter turns: three stages of two 3x3
    convolutions (BatchNorm, ReLU; `width`, 2 `width`, 4 `width` channels), each stage but the
    last followed by 2x2 max pooling, then global average pooling and a linear layer to 4
    logits. Any image size of at least 8 pixels; inputs in [-1, 1]."""

    def __init__(self, image_size: int = 32, channels: int = 3, width: int = 32) -> None:
        super().__init__()
        if image_size < 8:
            raise ValueError(f"the rotation classifier needs images of at least 8x8 pixels; got "
                             f"{image_size} - use image_size 16 or more")
        self.image_size, self.channels, self.width = image_size, channels, width
        layers: list[nn.Module] = []
        prev = channels
        for stage, w in enumerate((width, 2 * width, 4 * width)):
            for _ in range(2):
                layers += [nn.Conv2d(prev, w, 3, padding=1, bias=False), nn.BatchNorm2d(w),
                           nn.ReLU(inplace=True)]
                prev = w
            if stage < 2:
                layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(prev, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def parameter_count(module: nn.Module) -> int:
    """The number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
