"""The rotation head of the GAN family: SS-GAN's self-supervision (Chen et al., CVPR 2019) in
GANomaly's discriminator, and so in the hybrid's.

Beside its real/fake logit the discriminator gets a second head on its last feature map
(`nets.GanomalyDiscriminator(rotation_head=True)`) that says which of the four quarter turns an
image was shown in. It learns that on the normal training images only (each batch in its four
turns, mirrored left-right at random), so it learns what is *up* in a normal image, which a
reconstruction error does not measure. Training (weights in the method's config):

    L_D += w_rot   * CE(head(rot_k(x)), k)        x: the normal batch, k = 0..3
    L_G += w_rot_g * CE(head(rot_k(x_hat)), k)    SS-GAN's generator term, through D's head

and the score term of an image is the head's rotation loss on its four turns (rotation.py),
`l_rot(x) = sum_k -log p(k | rot_k(x))`, in eval mode, averaged with its mirror image's when
`rot_flips`. The reference it is measured against is `rotnet`, a classifier trained on the
rotations alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .nets import GanomalyDiscriminator
from .rotation import all_rotations, batch_terms, random_hflip


def rotation_loss(d: GanomalyDiscriminator, x: torch.Tensor,
                  flips: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean cross-entropy, accuracy) of D's rotation head on the four turns of `x` (train
    mode, with gradients); with `flips`, each image is first mirrored at random."""
    if flips is not None:
        x = random_hflip(x, flips)
    turned, labels = all_rotations(x)
    logits = d.rotation_logits(turned)
    loss = F.cross_entropy(logits, labels)
    return loss, (logits.argmax(1) == labels).float().mean().detach()


@torch.no_grad()
def logits(d: GanomalyDiscriminator, x: torch.Tensor) -> torch.Tensor:
    """(4N, 4) head logits of the four turns of a batch (rotation.all_rotations' order), in the
    module's current mode (scoring sets eval mode)."""
    return d.rotation_logits(all_rotations(x)[0]).float()


@torch.no_grad()
def terms(d: GanomalyDiscriminator, x: torch.Tensor, flips: bool = True
          ) -> dict[str, torch.Tensor]:
    """Per-image `l_rot` (averaged with the mirror image's when `flips`) and `acc_rot` (turns
    recognised, 0-4) of a batch, in the module's current mode."""
    table = batch_terms(d.rotation_logits, x, flips)
    table["l_rot"] = table.pop("l_rot_flips", table["l_rot"])
    return table


@torch.no_grad()
def eval_logits(d: GanomalyDiscriminator, images: torch.Tensor, batch_size: int = 256
                ) -> torch.Tensor:
    """(4N, 4) eval-mode logits of images in [-1, 1], in rotation.all_rotations' order over the
    whole set (for `rotation.confusion`); the module's mode is restored after."""
    mode = d.training
    d.eval()
    device = next(d.parameters()).device
    try:
        parts = [logits(d, x.to(device)).view(4, len(x), 4).cpu() for x in images.split(batch_size)]
    finally:
        d.train(mode)
    return torch.cat(parts, 1).reshape(-1, 4)


def figures(d: GanomalyDiscriminator, val_images: torch.Tensor, val_table, test_table,
            test_images: torch.Tensor, test_labels, *, hardest: int = 8,
            max_anomalies: int = 1000) -> dict:
    """What the head learnt, for the notebooks (03, 05): the validation normals with the highest
    l_rot in their four turns, the per-turn confusion of the head on the validation normals and
    on (at most `max_anomalies`) test anomalies, and l_rot against l_enc on the test set.
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
    out["scatter"] = plots.term_scatter(test_table["l_enc"], test_table["l_rot"], labels,
                                        xlabel="l_enc", ylabel="l_rot", title="test images")
    return out
