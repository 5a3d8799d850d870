"""The rotation head of the GAN family: SS-GAN's self-supervision (Chen et al., CVPR 2019) in
the DCGAN discriminator, so in AnoGAN's (and f-AnoGAN's, which shares it), GANomaly's and the
hybrid's.

Beside its real/fake logit the discriminator gets a second head on its last feature map
(`nets.Discriminator(rotation_head=True)`) that says which of the four quarter turns an
image was shown in. It learns that on the normal training images only (each batch in its four
turns, mirrored left-right at random), so it learns what is *up* in a normal image, which a
reconstruction error does not measure. Training (weights in the method's config):

    L_D += w_rot   * CE(head(rot_k(x)), k)        x: the normal batch, k = 0..3
    L_G += w_rot_g * CE(head(rot_k(x_hat)), k)    SS-GAN's generator term, through D's head
                                                  (x_hat: GANomaly's reconstructions, G(z) in AnoGAN)

and the score term of an image is the head's rotation loss on its four turns (rotation.py),
`l_rot(x) = sum_k -log p(k | rot_k(x))`, in eval mode, averaged with its mirror image's when
`rot_flips`. The reference it is measured against is `rotnet`, a classifier trained on the
rotations alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .nets import Discriminator, eval_mode
from .rotation import all_rotations, batch_terms, random_hflip


def rotation_loss(d: Discriminator, x: torch.Tensor,
                  flips: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cross-entropy, accuracy) of D's rotation head on the four turns of `x` (train
    mode, with gradients); with `flips`, each image is first mirrored at random."""
    if flips is not None:
        x = random_hflip(x, flips)
    turned, labels = all_rotations(x)
    logits = d.rotation_logits(turned)
    loss = F.cross_entropy(logits, labels)
    return loss, (logits.argmax(1) == labels).float().mean().detach()


def rotation_flips(config) -> tuple[torch.Generator, ...]:
    """The generator of the rotation loss's random mirroring, seeded by `config.seed + 1`, for
    the training loop to save and restore (a config with w_rot, rot_hflip and seed); none without
    the head or the mirroring, so a run without the head draws as it did before the head existed."""
    if not (config.w_rot and config.rot_hflip):
        return ()
    return (torch.Generator().manual_seed(config.seed + 1),)


@torch.no_grad()
def logits(d: Discriminator, x: torch.Tensor) -> torch.Tensor:
    """(4N, 4) head logits of the four turns of a batch (rotation.all_rotations' order), in the
    module's current mode (scoring sets eval mode)."""
    return d.rotation_logits(all_rotations(x)[0]).float()


@torch.no_grad()
def terms(d: Discriminator, x: torch.Tensor, flips: bool = True
          ) -> dict[str, torch.Tensor]:
    """Per-image `l_rot` (averaged with the mirror image's when `flips`) and `acc_rot` (turns
    recognised, 0-4) of a batch, in the module's current mode."""
    table = batch_terms(d.rotation_logits, x, flips)
    table["l_rot"] = table.pop("l_rot_flips", table["l_rot"])
    return table


@torch.no_grad()
def eval_terms(d: Discriminator, images: torch.Tensor, flips: bool = True,
               batch_size: int = 256) -> dict[str, torch.Tensor]:
    """`terms` of a whole set of images in [-1, 1], eval mode (BatchNorm's running statistics,
    so an image's terms do not depend on its batch), in batches of `batch_size`, on the CPU; the
    module's mode is restored after."""
    device = next(d.parameters()).device
    parts: dict[str, list[torch.Tensor]] = {"l_rot": [], "acc_rot": []}
    with eval_mode(d):
        for x in images.split(batch_size):
            for name, values in terms(d, x.to(device, torch.float32), flips).items():
                parts[name].append(values.float().cpu())
    return {k: torch.cat(v) if v else torch.zeros(0) for k, v in parts.items()}


@torch.no_grad()
def eval_logits(d: Discriminator, images: torch.Tensor, batch_size: int = 256
                ) -> torch.Tensor:
    """(4N, 4) eval-mode logits of images in [-1, 1], in rotation.all_rotations' order over the
    whole set (for `rotation.confusion`); the module's mode is restored after."""
    device = next(d.parameters()).device
    with eval_mode(d):
        parts = [logits(d, x.to(device)).view(4, len(x), 4).cpu() for x in images.split(batch_size)]
    return torch.cat(parts, 1).reshape(-1, 4)


def figures(d: Discriminator, val_images: torch.Tensor, val_table, test_table,
            test_images: torch.Tensor, test_labels, *, hardest: int = 8,
            max_anomalies: int = 1000, versus: str = "l_enc") -> dict:
    """What the head learnt, for the notebooks (02, 03, 05): the validation normals with the
    highest l_rot in their four turns, the per-turn confusion of the head on the validation
    normals and on (at most `max_anomalies`) test anomalies, and l_rot against the test table's
    `versus` term (GANomaly's l_enc; AnoGAN's mapping score, "anogan") on the test set.
    Images in [-1, 1]; returns {name: matplotlib Figure}. Reads test labels: after the metrics."""
    from . import plots
    from .rotation import ROTATION_NAMES, confusion

    labels = torch.as_tensor(test_labels)
    top = val_table["l_rot"].argsort(descending=True)[:hardest]
    out = {"hardest": plots.image_grid(all_rotations(val_images[top])[0], value_range=(-1, 1),
                                       nrow=len(top), title="the validation normals the head "
                                       "finds hardest (highest l_rot), in their four turns")}
    anomalies = test_images[labels == 1][:max_anomalies]
    matrices = {name: confusion(eval_logits(d, x), len(x))
                for name, x in (("validation normals", val_images), ("test anomalies", anomalies))}
    out["confusion"] = plots.rotation_confusions(matrices, ROTATION_NAMES,
                                                 title="the head: turn shown vs turn predicted")
    out["scatter"] = plots.term_scatter(test_table[versus], test_table["l_rot"], labels,
                                        xlabel=versus, ylabel="l_rot", title="test images")
    return out
