"""Latent mapping: for each image x find the z whose G(z) is closest (AnoGAN's search), and the
house interface that maps and scores images with a trained GAN or f-AnoGAN encoder.

    result = map_latent(gan.generator, gan.discriminator, x)         # x in [-1, 1]
    result.score, result.residual, result.discrimination, result.z  # one row per image
    table = score(gan_or_encoder, split.test, mapping="iterative")    # the score table

The search optimises one z per image with Adam, G and D frozen in eval mode. The loss of each image
is summed on its own, so the gradient of one image's z never depends on another image: a batch of
256 images follows exactly the 256 optimisations one image at a time would, only faster.

A discriminator with the rotation head (`anogan.AnoganConfig(w_rot=1)`, `rothead`) adds its
per-image `l_rot` and `acc_rot` to the score table, and the mapping score itself as the term
`anogan`; `latentscore.ScoreRule` then chooses the score column: one term as it is (`anogan`,
the published score, by default) or several z-scored on the validation normals and weighted.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch
from torch import nn

from . import rothead
from .data import ImageSet
from .nets import Discriminator, Generator, eval_mode
from .runs import Run, progress

if TYPE_CHECKING:  # type hints only: anogan and fanogan import this module
    from .anogan import TrainedGAN
    from .fanogan import TrainedEncoder
    from .latentscore import ScoreRule

MAPPINGS = ("iterative", "encoder", "encoder+refine")
MAP_LR = 0.01  # Adam's step on z; see 02_latent_mapping for the comparison with 1e-3
MAP_ITERATIONS = 500  # the paper's number of mapping steps
LAMBDA = 0.1  # weight of the discrimination term (the paper's lambda)
VALUE_RANGE = (-1.0, 1.0)  # tanh generator: images in [-1, 1]
PUBLISHED = "anogan"  # the term of the mapping score itself, beside the head's (latentscore)


@dataclass
class LatentMap:
    """The result of mapping images to the latent space: one row per image."""

    z: torch.Tensor  # (N, latent_dim), the final z
    score: torch.Tensor  # (N,) (1 - lam) * residual + lam * discrimination
    residual: torch.Tensor  # (N,) sum |x - G(z)|
    discrimination: torch.Tensor  # (N,) sum |f(x) - f(G(z))|
    lam: float = LAMBDA
    head: dict[str, torch.Tensor] = field(default_factory=dict)  # l_rot, acc_rot: D's rotation head

    def table(self, rule: ScoreRule | None = None) -> dict[str, torch.Tensor]:
        """The score table of the house interface (term -> per-image values, plus "score"): with
        the rotation head also the mapping score as the term "anogan", and l_rot and acc_rot.
        The score is the mapping score, or the one `rule` chooses."""
        table = {"residual": self.residual, "discrimination": self.discrimination}
        if self.head:
            table |= {PUBLISHED: self.score, **self.head}
        table["score"] = self.score
        return table if rule is None else rule(table)

    def subset(self, index) -> LatentMap:
        """The rows of some of the images (e.g. the test sample another mapping scored)."""
        return LatentMap(self.z[index], self.score[index], self.residual[index],
                         self.discrimination[index], self.lam,
                         {k: v[index] for k, v in self.head.items()})


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


class FrozenGAN(nn.Module):
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


def _parts(frozen: FrozenGAN, x: torch.Tensor, fx: torch.Tensor,
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
    frozen = FrozenGAN(generator, discriminator).to(device)
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
# Mapping and scoring with a trained model: the house interface (a score table per image)


@torch.no_grad()
def encode(encoder: nn.Module, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """z = E(x) for every image with an encoder network (f-AnoGAN's), in eval mode, batched."""
    device = next(encoder.parameters()).device
    with eval_mode(encoder):
        out = [encoder(x.to(device, torch.float32)).cpu() for x in images.split(batch_size)]
    return torch.cat(out) if out else torch.zeros(0, encoder.latent_dim)


def _as_images(images) -> torch.Tensor:
    if isinstance(images, ImageSet):
        return images.in_range(*VALUE_RANGE).tensors()
    if isinstance(images, torch.Tensor):
        return images
    raise TypeError("images must be an ImageSet or a float tensor (N, C, H, W) in [-1, 1]")


def map_images(model: TrainedGAN | TrainedEncoder, images, *, mapping: str = "iterative",
               iterations: int = MAP_ITERATIONS, refine_iterations: int = 50,
               lr: float = MAP_LR, lam: float = LAMBDA, batch_size: int = 256,
               seed: int = 0, z0: torch.Tensor | None = None,
               progress_bar: bool = True) -> LatentMap:
    """Map images with one of three mappings: "iterative" (AnoGAN, `iterations` Adam steps from a
    seeded random z, or from `z0`), "encoder" (f-AnoGAN, z = E(x), no search) or
    "encoder+refine" (E(x), then `refine_iterations` Adam steps). With the rotation head in
    the GAN's discriminator the map also holds the head's terms (`head_terms`)."""
    if mapping not in MAPPINGS:
        raise ValueError(f"mapping {mapping!r} is not known; use one of {', '.join(MAPPINGS)}")
    x = _as_images(images)
    encoder = getattr(model, "encoder", None)  # a TrainedEncoder has one, a TrainedGAN not
    gan = model.gan if encoder is not None else model
    if mapping == "iterative":
        result = map_latent(gan.generator, gan.discriminator, x, iterations=iterations, lr=lr,
                            lam=lam, batch_size=batch_size, seed=seed, z0=z0,
                            progress_bar=progress_bar)
    elif encoder is None:
        raise ValueError(f"mapping {mapping!r} needs a trained f-AnoGAN encoder "
                         f"(fanogan.train_encoder or fanogan.load_encoder), not a bare GAN")
    else:
        steps = 0 if mapping == "encoder" else refine_iterations
        result = map_latent(gan.generator, gan.discriminator, x, iterations=steps, lr=lr,
                            lam=lam, batch_size=batch_size, seed=seed,
                            z0=encode(encoder, x, batch_size), progress_bar=progress_bar)
    return dataclasses.replace(result, head=head_terms(gan, x, batch_size))


def head_terms(gan: TrainedGAN, images: torch.Tensor, batch_size: int = 256
               ) -> dict[str, torch.Tensor]:
    """The rotation head's per-image l_rot and acc_rot (`rothead.eval_terms`, eval mode, with
    the GAN's rot_flips), in batches of `batch_size`; nothing for a D without the head."""
    d = gan.discriminator
    if not getattr(d, "has_rotation_head", False):  # (any D with `features` maps)
        return {}
    return rothead.eval_terms(d, images, gan.config.rot_flips, batch_size)


def score(model: TrainedGAN | TrainedEncoder, images, **kwargs) -> dict[str, torch.Tensor]:
    """The score table {"residual", "discrimination", "score"} (higher = more anomalous; with
    the rotation head also "anogan", "l_rot", "acc_rot"); keyword arguments as for `map_images`."""
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
    with eval_mode(gan.generator):
        return gan.generator(z.to(device)).cpu()


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
