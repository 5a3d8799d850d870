"""RotNet: a rotation classifier trained on the normal images, the self-supervised baseline.

Not a GAN. Every one-class paper since GeoTrans (Golan & El-Yaniv, NeurIPS 2018) reports a
self-supervised detector beside its own, because on natural images it beats the reconstruction
methods by a wide margin; the guidebook has it for the same reason, and the rotation head of the
GAN family (`ganomaly` with `w_rot > 0`, SS-GAN style) is measured against it.

Training: each batch of normal images (mirrored left-right at random) is shown in its four
quarter turns, and the network (`nets.RotationClassifier`) learns which turn it sees
(cross-entropy). Adam with a cosine learning-rate decay over the epochs (the rate of an epoch
depends on its number only, so resuming is exact). The best epoch has the lowest mean rotation
loss on the validation normals.

Score of an image: l_rot = sum over the four turns of -log p(right turn | turned image)
(rotation.py), higher = more anomalous; with `score_flips`, the mean of the image's and its
mirror image's l_rot.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F

from .data import OneClassSplit, image_batches
from .evaluate import dev_metrics
from .nets import RotationClassifier, eval_mode
from .rotation import all_rotations, batch_terms, random_hflip
from .runs import Run, read_checkpoint, save_image_grid
from .scorers import RunSource, Scorer, register
from .training import Cycled, TrainingLoop, load_trained

METHOD = "rotnet"
VALUE_RANGE = (-1.0, 1.0)
ARCH_KEYS = ("image_size", "channels", "width")
SCORE_KEYS = ("score_flips", "score_batch_size")  # used when scoring only: free on resume
ScoreTable = dict[str, torch.Tensor]


@dataclass
class RotnetConfig:
    """The rotation classifier's training and scoring parameters (json-safe)."""

    epochs: int = 15
    batch_size: int = 64  # normal images per step (each shown in its 4 turns)
    min_steps_per_epoch: int = 10  # small sets (8x8 digits) are cycled to this many steps
    lr: float = 1e-3  # Adam's starting rate, decayed to 0 by a cosine over the epochs
    weight_decay: float = 5e-4
    width: int = 32  # channels of the first stage (doubled twice)
    hflip: bool = True  # mirror training images left-right at random
    score_flips: bool = True  # score = mean l_rot of the image and its mirror image
    score_batch_size: int = 256
    seed: int = 0
    resume: bool = False

    def __post_init__(self) -> None:
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be at least 2 for BatchNorm (got "
                             f"{self.batch_size}); use e.g. 64")


@dataclass
class TrainedRotnet:
    """A trained (or reloaded) rotation classifier with what its training recorded."""

    model: RotationClassifier
    config: RotnetConfig
    epoch: int
    best_epoch: int
    history: dict[str, list[float]] = field(default_factory=dict)
    epoch_history: dict[str, list[float]] = field(default_factory=dict)
    train_seconds: float = 0.0


@torch.no_grad()
def rotation_logits(model: RotationClassifier, x: torch.Tensor) -> torch.Tensor:
    """(4N, 4) logits of the four turns of a batch (rotation.all_rotations' order), eval mode."""
    with eval_mode(model):
        return model(all_rotations(x)[0]).float()


@torch.no_grad()
def score(trained: TrainedRotnet, images, *, batch_size: int | None = None,
          score_flips: bool | None = None) -> ScoreTable:
    """The score table: l_rot (sum over the turns of -log p(right turn)), acc_rot (turns
    recognised, 0-4), and score (l_rot, averaged with the mirror image's when score_flips).
    Eval mode; the model's mode is restored after."""
    cfg = trained.config
    batch_size = batch_size or cfg.score_batch_size
    flips = cfg.score_flips if score_flips is None else score_flips
    model = trained.model
    device = next(model.parameters()).device
    parts: dict[str, list[torch.Tensor]] = {"l_rot": [], "acc_rot": [], "score": []}
    with eval_mode(model):
        for x in image_batches(images, batch_size, VALUE_RANGE):
            terms = batch_terms(model, x.to(device), flips)
            terms["score"] = terms.pop("l_rot_flips", terms["l_rot"])
            for name, values in terms.items():
                parts[name].append(values.cpu())
    return {k: torch.cat(v) if v else torch.zeros(0) for k, v in parts.items()}


def cosine_lr(base: float, epoch: int, epochs: int) -> float:
    """The learning rate of a (0-based) epoch: cosine decay from `base` to near 0."""
    return 0.5 * base * (1.0 + math.cos(math.pi * epoch / epochs))


def build_model(image_size: int, channels: int, config: RotnetConfig,
                device: torch.device | str = "cpu") -> RotationClassifier:
    """A fresh classifier, seeded by config.seed."""
    torch.manual_seed(config.seed)
    return RotationClassifier(image_size, channels, config.width).to(device)


def train(split: OneClassSplit, config: RotnetConfig, run: Run,
          device: torch.device | str = "cpu", *, progress_images: int = 8) -> TrainedRotnet:
    """Train the rotation classifier on the split's normal training images; returns the best
    epoch's model (lowest mean l_rot on the validation normals)."""
    device = torch.device(device)
    model = build_model(split.image_size, split.channels, config, device)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    shuffle = torch.Generator().manual_seed(config.seed)
    flips = torch.Generator().manual_seed(config.seed + 1)
    loop = TrainingLoop(run, METHOD, {**asdict(config), "image_size": split.image_size,
                                      "channels": split.channels},
                        models={"classifier": model}, optimizers={"adam": optimizer},
                        epochs=config.epochs, resume=config.resume, arch_keys=ARCH_KEYS,
                        generators=(shuffle, flips), free_keys=SCORE_KEYS)
    train_set = split.train.in_range(*VALUE_RANGE)
    loader = Cycled(train_set.loader(config.batch_size, shuffle=True, generator=shuffle,
                                     drop_last=len(train_set) > config.batch_size),
                    config.min_steps_per_epoch)
    shown = split.val.in_range(*VALUE_RANGE).tensors()[:progress_images]
    trained = TrainedRotnet(model, config, loop.epoch, loop.best_epoch)
    for epoch in loop.epochs():
        for group in optimizer.param_groups:
            group["lr"] = cosine_lr(config.lr, epoch, config.epochs)
        model.train()
        for step, (x, _) in loop.steps(loader):
            x = x.to(device, non_blocking=True)
            if config.hflip:
                x = random_hflip(x, flips)
            turned, labels = all_rotations(x)
            logits = model(turned)
            loss = F.cross_entropy(logits, labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            accuracy = (logits.argmax(1) == labels).float().mean()
            loop.record(step, loss=loss, accuracy=accuracy)
        val_table = score(trained, split.val)
        loop.epoch_history.setdefault("val_l_rot", []).append(float(val_table["l_rot"].mean()))
        if split.has_dev:  # recorded to look at on dev; never selects
            dev = dev_metrics(val_table["score"], score(trained, split.dev)["score"])
            loop.epoch_history.setdefault("dev_auroc", []).append(dev["auroc"])
        images = all_rotations(shown)[0] if len(shown) else None
        loop.end_epoch(val_loss=float(val_table["l_rot"].mean()), images=images,
                       value_range=VALUE_RANGE, nrow=max(1, len(shown)))
    checkpoint = load_trained(run, METHOD, {"classifier": model}, which="best", map_location=device)
    return TrainedRotnet(model, config, checkpoint["epoch"], loop.best_epoch, history=loop.history,
                         epoch_history=loop.epoch_history, train_seconds=loop.train_seconds)


def load(run: Run, device: torch.device | str = "cpu", which: str = "best") -> TrainedRotnet:
    """Reload a trained rotation classifier from the run folder (a fresh kernel), in eval mode."""
    saved = read_checkpoint(run.checkpoint(METHOD, which))["config"]
    model = RotationClassifier(saved["image_size"], saved["channels"], saved["width"])
    checkpoint = load_trained(run, METHOD, {"classifier": model}, which=which, map_location="cpu")
    model.to(device).eval()
    fields = set(RotnetConfig.__dataclass_fields__)
    config = RotnetConfig(**{k: v for k, v in checkpoint["config"].items() if k in fields})
    m = checkpoint["metrics"]
    return TrainedRotnet(model, config, checkpoint["epoch"], m.get("best_epoch", -1),
                         history=checkpoint["history"].get("steps", {}),
                         epoch_history=checkpoint["history"].get("epochs", {}),
                         train_seconds=m.get("train_seconds", 0.0))


def save_hardest(trained: TrainedRotnet, images: torch.Tensor, scores: torch.Tensor, path, *,
                 count: int = 8) -> torch.Tensor:
    """The `count` images (in [-1, 1]) with the highest scores, each in its four turns (one row
    per turn), saved as one PNG; returns the grid's images for display."""
    top = scores.argsort(descending=True)[:count]
    chosen = images[top]
    grid = all_rotations(chosen)[0]
    save_image_grid(grid, path, value_range=VALUE_RANGE, nrow=len(chosen))
    return grid



@register(METHOD, checkpoints=("rotnet_best",))
def _detector(source: RunSource, method: str, device: torch.device) -> Scorer:
    """The detector (scorers.py) of a run's RotNet: its score as the notebook scored; no map."""
    trained = load(source.run, device)
    view = source.view("rotnet_best")
    flips = bool(source.params(method).get("score_flips", trained.config.score_flips))

    def fn(batch, maps: bool):
        x = batch.images(view, VALUE_RANGE)
        return score(trained, x, batch_size=len(x), score_flips=flips)["score"], None

    return Scorer(method, (view,), fn, batch_size=trained.config.score_batch_size,
                  no_map="rotnet classifies the turns of a whole image; it has no per-pixel map")
