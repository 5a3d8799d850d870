"""The names of AnoGAN's metrics.json entries, in one place and without torch, so that the sweep
(which plans runs) and the scorer registry (which scores them) read the same list.

Notebook 02 names the search's entry after notebook 01's GAN loss (`gan_method`) and records the
f-AnoGAN encoder's entries beside it (`encoder_method`, and with "-refine" the encoder followed by
a short search): `ENTRIES` is every name it can write.
"""

from __future__ import annotations

GAN_LOSSES = ("bce", "wgan-gp")
REFINE_SUFFIX = "-refine"


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} {value!r} is not known; use one of {', '.join(choices)}")


def gan_method(gan_loss: str) -> str:
    """The method name (checkpoints, metrics.json): "anogan" or "anogan-wgangp"."""
    check_choice("gan_loss", gan_loss, GAN_LOSSES)
    return "anogan" if gan_loss == "bce" else "anogan-wgangp"


def encoder_method(gan_loss: str) -> str:
    """The f-AnoGAN encoder's method name: "fanogan" or "fanogan-wgangp"."""
    return "f" + gan_method(gan_loss)


# every entry notebook 02 can write: the search's, the encoder's, the encoder + refine's, per GAN
ENTRIES: tuple[str, ...] = (
    *(gan_method(loss) for loss in GAN_LOSSES),
    *(name for loss in GAN_LOSSES
      for name in (encoder_method(loss), encoder_method(loss) + REFINE_SUFFIX)))
