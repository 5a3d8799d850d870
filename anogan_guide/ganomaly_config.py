"""GANomaly's parameters (and so the hybrid's, whose config extends them): json-safe, stored in
every checkpoint and, through the notebooks, in metrics.json."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import ClassVar

from . import scorerule
from .data import OneClassSplit

SELECTION_CRITERIA = ("l_enc", "l_enc_rel", "l_con", "last")
SCORE_TERMS = ("l_enc", "l_con", "l_adv", "l_rot")  # what GANomaly's score may combine
ROTATION_KEYS = ("w_rot", "w_rot_g", "rot_hflip", "rot_flips")


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
    w_rot: float = 0.0  # D's rotation loss on the normals' four turns (SS-GAN); 0: no head
    w_rot_g: float = 0.0  # G's: the rotation loss of its reconstructions through D's head
    rot_hflip: bool = True  # mirror the rotation loss's images left-right at random
    rot_flips: bool = True  # l_rot = mean of the image's and its mirror image's rotation loss
    # the score: one term as it is, or several z-scored (validation normals) and combined
    weighting: str = "fixed"  # fixed (score_weights) | pseudo | equal | min_variance | max
    score_terms: str = "l_enc"  # comma-separated, of SCORE_TERMS (l_enc: the published score)
    score_weights: str = "1"  # weighting=fixed: one weight per score term
    select: str = "l_enc_rel"  # validation criterion for the best epoch, see SELECTION_CRITERIA
    seed: int = 0
    resume: bool = False

    SCORE_TERMS: ClassVar[tuple[str, ...]] = SCORE_TERMS
    # keys that checkpoints made before they existed lack: recorded only when not at their
    # default, so such a checkpoint still resumes and reloads as what it was
    LATER_KEYS: ClassVar[tuple[str, ...]] = (*ROTATION_KEYS, "weighting", "score_terms",
                                             "score_weights")

    @property
    def terms(self) -> tuple[str, ...]:
        """The score's terms, in order."""
        return scorerule.parse_terms(self.score_terms)

    @property
    def weights(self) -> tuple[float, ...] | None:
        """weighting=fixed: the weight of each score term."""
        return scorerule.parse_weights(self.score_weights)

    def __post_init__(self) -> None:
        if self.select not in SELECTION_CRITERIA:
            raise ValueError(f"select={self.select!r} is not a validation criterion; use one of "
                             f"{', '.join(SELECTION_CRITERIA)}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 for BatchNorm (got "
                             f"{self.batch_size}); use e.g. 64")
        if self.w_rot < 0 or self.w_rot_g < 0 or (self.w_rot_g and not self.w_rot):
            raise ValueError(f"w_rot={self.w_rot}, w_rot_g={self.w_rot_g}: the weights of the "
                             f"rotation losses are >= 0, and w_rot_g needs the head that "
                             f"w_rot > 0 trains (e.g. -p w_rot 1)")
        scorerule.check(self.score_terms, self.weighting, self.score_weights, self.SCORE_TERMS)
        if "l_rot" in self.terms and not self.w_rot:
            raise ValueError("score_terms has l_rot, the rotation head's loss, but w_rot=0 "
                             "trains no head; pass e.g. -p w_rot 1")


def checkpoint_config(config: GanomalyConfig, split: OneClassSplit) -> dict:
    """The config as a checkpoint records it, with the image size and channels; LATER_KEYS only
    where they differ from their default, so a run at those defaults records what a run made
    before they existed did (and such a checkpoint resumes)."""
    defaults = {f.name: f.default for f in fields(config)}
    saved = {k: v for k, v in asdict(config).items()
             if k not in config.LATER_KEYS or v != defaults[k]}
    return {**saved, "image_size": split.image_size, "channels": split.channels}
