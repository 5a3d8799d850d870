"""Rotation prediction, the self-supervised task every rotation-based detector here shares.

A network that has learnt, on normal images only, to say which of four quarter turns
(0°, 90°, 180°, 270°) an image was shown in has learnt what is *up* in a normal image: where the
sky is, which way a car's wheels face. On an image of another class that knowledge fails, and the
network's loss on the four rotations of the image is the anomaly term (Golan & El-Yaniv, NeurIPS
2018; Hendrycks et al., NeurIPS 2019):

    l_rot(x) = sum_k  -log p(k | rot_k(x)),   k = 0, 1, 2, 3 quarter turns

The rotation classifier (`rotnet.py`) and the rotation head of GANomaly's discriminator
(SS-GAN, Chen et al., CVPR 2019) both use these functions, so the two are scored the same way.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

ROTATIONS = 4  # quarter turns: 0, 90, 180, 270 degrees
ROTATION_NAMES = ("0°", "90°", "180°", "270°")


def rotate(images: torch.Tensor, k: int) -> torch.Tensor:
    """The batch turned by k quarter turns (counter-clockwise), images (N, C, S, S)."""
    if images.ndim != 4 or images.shape[-1] != images.shape[-2]:
        raise ValueError(f"rotation needs square images shaped (N, C, S, S); got {tuple(images.shape)}")
    return torch.rot90(images, k, dims=(2, 3))


def all_rotations(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(4N, C, S, S) images and their (4N,) rotation labels: all images turned by 0, then all
    turned by 1 quarter turn, and so on (so row k * N + i is image i turned by k)."""
    turned = torch.cat([rotate(images, k) for k in range(ROTATIONS)])
    labels = torch.arange(ROTATIONS, device=images.device).repeat_interleave(len(images))
    return turned, labels


def random_hflip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image mirrored left-right with probability 1/2 (the augmentation of rotation
    training); `generator` (on the CPU) makes the choice reproducible."""
    flip = torch.rand(len(images), generator=generator) < 0.5
    flip = flip.to(images.device).view(-1, 1, 1, 1)
    return torch.where(flip, images.flip(-1), images)


def rotation_nll(logits: torch.Tensor, n: int) -> torch.Tensor:
    """Per-rotation negative log-likelihood of the right turn, shaped (4, N), from the (4N, 4)
    logits of `all_rotations(images)` (same order)."""
    if logits.shape != (ROTATIONS * n, ROTATIONS):
        raise ValueError(f"expected ({ROTATIONS * n}, {ROTATIONS}) rotation logits for {n} images; "
                         f"got {tuple(logits.shape)}")
    labels = torch.arange(ROTATIONS, device=logits.device).repeat_interleave(n)
    return F.cross_entropy(logits.float(), labels, reduction="none").view(ROTATIONS, n)


def rotation_terms(logits: torch.Tensor, n: int) -> dict[str, torch.Tensor]:
    """Score-table terms of N images from their rotations' logits: `l_rot` (the sum over the
    four turns of -log p(right turn)) and `acc_rot` (how many of the four turns the network got
    right, 0-4; for figures, not a score)."""
    nll = rotation_nll(logits, n)
    guessed = logits.argmax(1).view(ROTATIONS, n)
    truth = torch.arange(ROTATIONS, device=logits.device).view(-1, 1)
    return {"l_rot": nll.sum(0), "acc_rot": (guessed == truth).sum(0).float()}


def batch_terms(logits_of: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                flips: bool) -> dict[str, torch.Tensor]:
    """`rotation_terms` of a batch, `logits_of` giving the logits of a batch of turned images
    (a rotation classifier, or the discriminator's head); with `flips`, also `l_rot_flips`: the
    mean of each image's l_rot and its mirror image's."""
    table = rotation_terms(logits_of(all_rotations(x)[0]).float(), len(x))
    if flips:
        mirrored = rotation_terms(logits_of(all_rotations(x.flip(-1))[0]).float(), len(x))
        table["l_rot_flips"] = 0.5 * (table["l_rot"] + mirrored["l_rot"])
    return table


def confusion(logits: torch.Tensor, n: int) -> torch.Tensor:
    """4 x 4 counts: row = the turn shown, column = the turn predicted (scikit-learn)."""
    from sklearn.metrics import confusion_matrix

    truth = torch.arange(ROTATIONS).repeat_interleave(n).numpy()
    return torch.as_tensor(confusion_matrix(truth, logits.argmax(1).cpu().numpy(),
                                            labels=list(range(ROTATIONS))))
