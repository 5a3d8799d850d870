"""The one-class split every method uses, made from the images `sources` reads.

Protocol (../shared/design/ALGORITHMS.md): train = the official train images of the normal class
minus a seeded `val_fraction` held out as validation normals; test = the full official test set,
every other class anomalous. The development set (`dev`): the validation normals against a
seeded, class-stratified sample of the *other* classes' training images, so that the guidebook's
global defaults are chosen without looking at a test image. Images are kept in memory as uint8
(N, C, S, S), resized once; each method asks for its value range with `ImageSet.in_range`.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .runs import Run, write_json
from .sources import dev_indices, digits, image_folder, resize, synthetic, torchvision_set

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "folder", "synthetic")
IMAGE_SIZES = (16, 28, 32, 64)


class ImageSet(Dataset):
    """Images held as uint8 (N, C, S, S) with a 0 = normal / 1 = anomaly label each.

    Items are (image, label) with the image as float in `value_range` ([0, 1] unless asked)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor,
                 value_range: tuple[float, float] = (0.0, 1.0)) -> None:
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise TypeError("ImageSet expects uint8 images shaped (N, C, H, W)")
        self.images, self.labels, self.value_range = images, labels.long(), value_range

    def in_range(self, low: float, high: float) -> ImageSet:
        """The same images (no copy) delivered in [low, high], e.g. (-1, 1) for tanh generators."""
        return ImageSet(self.images, self.labels, (float(low), float(high)))

    def __len__(self) -> int:
        return len(self.images)

    def _convert(self, images: torch.Tensor) -> torch.Tensor:
        low, high = self.value_range
        return images.float().div_(255.0).mul_(high - low).add_(low)

    def __getitem__(self, index):
        return self._convert(self.images[index]), self.labels[index]

    def tensors(self) -> torch.Tensor:
        """All images as one float tensor in `value_range` (for small sets and plots)."""
        return self._convert(self.images)

    def loader(self, batch_size: int, *, shuffle: bool = False,
               generator: torch.Generator | None = None, drop_last: bool = False) -> DataLoader:
        """A DataLoader in the main process (the data is in memory already)."""
        return DataLoader(self, batch_size=batch_size, shuffle=shuffle, generator=generator,
                          drop_last=drop_last)


def image_batches(images, batch_size: int, value_range: tuple[float, float] | None = None
                  ) -> Iterator[torch.Tensor]:
    """Float image batches of at most `batch_size`, in order, from an ImageSet (converted to
    `value_range`, or its own range), a tensor (N, C, H, W) taken as already in range, or an
    iterable of batches or (images, labels) pairs (a DataLoader's)."""
    if isinstance(images, ImageSet):
        images = images.in_range(*value_range) if value_range else images
        for start in range(0, len(images), batch_size):
            yield images._convert(images.images[start:start + batch_size])
    elif isinstance(images, torch.Tensor):
        if images.ndim != 4:
            raise ValueError(f"images must be shaped (N, C, H, W); got {tuple(images.shape)}")
        yield from images.split(batch_size)
    else:
        for batch in images:
            x = batch[0] if isinstance(batch, list | tuple) else batch
            yield from x.split(batch_size)


@dataclass
class OneClassSplit:
    """`.train`/`.val` hold normal images only; `.test` all test images labelled 0/1."""

    dataset: str
    normal_class: int | str
    image_size: int
    seed: int
    val_fraction: float
    channels: int
    train: ImageSet
    val: ImageSet
    test: ImageSet
    test_classes: torch.Tensor  # the original class index of every test image
    class_names: list[str]
    dev: ImageSet  # development anomalies: other classes' *training* images (label 1)
    dev_classes: torch.Tensor  # the original class index of every development anomaly
    config: dict = field(default_factory=dict)  # what split.json records (indices or file paths)

    @property
    def test_labels(self) -> torch.Tensor:
        """0 = normal, 1 = anomaly, one per test image. Read only for the final metrics."""
        return self.test.labels

    @property
    def has_dev(self) -> bool:
        """False when the training data holds the normal class only (a folder of normal images):
        there is nothing to build a development set from."""
        return len(self.dev) > 0

    def counts(self) -> dict[str, int]:
        return {"n_train": len(self.train), "n_val": len(self.val), "n_test": len(self.test),
                "n_test_normal": int((self.test.labels == 0).sum()),
                "n_test_anomalous": int((self.test.labels == 1).sum()),
                "n_dev_anomalous": len(self.dev)}

    def summary(self) -> str:
        """Deterministic lines for the notebook (nbval compares them)."""
        c = self.counts()
        return "\n".join([
            f"dataset={self.dataset} normal_class={self.normal_class} image_size={self.image_size}"
            f" channels={self.channels} seed={self.seed}",
            f"train normals: {c['n_train']}  validation normals: {c['n_val']}",
            f"test: {c['n_test']} ({c['n_test_normal']} normal, {c['n_test_anomalous']} anomalous)",
            f"development: the {c['n_val']} validation normals vs {c['n_dev_anomalous']} other "
            f"classes' training images",
        ])


def _check_args(dataset: str, image_size: int, val_fraction: float) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"unknown dataset {dataset!r}; use one of {', '.join(DATASETS)}")
    if image_size not in IMAGE_SIZES:
        raise ValueError(f"image_size {image_size} is not supported; use one of "
                         f"{', '.join(map(str, IMAGE_SIZES))}")
    if not 0.0 < float(val_fraction) < 1.0:
        raise ValueError(f"val_fraction must be between 0 and 1 (exclusive), got {val_fraction}; "
                         f"e.g. 0.1 holds out 10% of the normal training images")


def default_data_root() -> Path:
    return Path.home() / ".cache" / "anogan_guide" / "data"


def load_one_class(dataset: str, normal_class: int | str, *, data_root: str | Path | None = None,
                   image_size: int = 32, seed: int = 0, val_fraction: float = 0.1,
                   download: bool = False) -> OneClassSplit:
    """Load `dataset` and split it one-class: normal train/val from the train images of
    `normal_class`, the full test set labelled 0 = normal / 1 = anomaly."""
    _check_args(dataset, image_size, val_fraction)
    root = Path(data_root).expanduser().resolve() if data_root else default_data_root()
    if dataset == "folder":
        if not data_root:
            raise ValueError("the folder dataset needs data_root=<your image folder> (with train/ "
                             "and test/ inside)")
        if not root.is_dir():
            raise FileNotFoundError(f"data_root {root} does not exist; pass the folder that holds "
                                    f"train/ and test/")
        tr, trc, te, tec, names, refs, test_refs, normal = image_folder(
            root, normal_class, image_size, seed)
        normal_index = names.index(normal)
    else:
        if dataset == "digits":
            tr, trc, te, tec, names, refs, test_refs = digits()
        elif dataset == "synthetic":
            tr, trc, te, tec, names, refs, test_refs = synthetic()
        else:
            tr, trc, te, tec, names, refs, test_refs = torchvision_set(dataset, root, download)
        key = str(normal_class)
        if key not in names:
            raise ValueError(f"normal_class {normal_class!r} is not a class of {dataset}; use one "
                             f"of {', '.join(names)}")
        normal_index = names.index(key)
        normal_class = int(key) if key.isdigit() else key
    # the seeded hold-out of validation normals
    normal_idx = torch.nonzero(trc == normal_index).flatten().numpy()
    if len(normal_idx) < 2:
        raise ValueError(f"only {len(normal_idx)} training images of class {normal_class!r}; at "
                         f"least 2 are needed for a train/validation split")
    order = np.random.default_rng(seed).permutation(normal_idx)
    n_val = min(max(1, int(round(len(order) * float(val_fraction)))), len(order) - 1)
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    # a folder returns only the development sample of the other classes (read no more): all of it
    dev_idx = (np.flatnonzero(trc.numpy() != normal_index) if dataset == "folder"
               else dev_indices(trc.numpy(), normal_index, seed))
    channels = int(tr.shape[1])
    train_imgs = resize(tr[torch.from_numpy(train_idx)], image_size)
    val_imgs = resize(tr[torch.from_numpy(val_idx)], image_size)
    dev_imgs = resize(tr[torch.from_numpy(dev_idx)], image_size)
    test_imgs = resize(te, image_size)
    test_labels = (tec != normal_index).long()
    config = {
        "dataset": dataset, "normal_class": normal_class, "image_size": image_size, "seed": seed,
        "val_fraction": float(val_fraction), "data_root": str(root) if data_root else None,
        "channels": channels, "class_names": names,
        "train": [refs[i] for i in train_idx], "val": [refs[i] for i in val_idx],
        "test": test_refs, "dev": [refs[i] for i in dev_idx],
    }
    return OneClassSplit(
        dataset=dataset, normal_class=normal_class, image_size=image_size, seed=seed,
        val_fraction=float(val_fraction), channels=channels,
        train=ImageSet(train_imgs, torch.zeros(len(train_imgs), dtype=torch.long)),
        val=ImageSet(val_imgs, torch.zeros(len(val_imgs), dtype=torch.long)),
        test=ImageSet(test_imgs, test_labels), test_classes=tec.long(), class_names=names,
        dev=ImageSet(dev_imgs, torch.ones(len(dev_imgs), dtype=torch.long)),
        dev_classes=trc[torch.from_numpy(dev_idx)].long(), config=config)


# ---------------------------------------------------------------------------------------------
# split.json: the split every later notebook reuses.

SPLIT_KEYS = ("dataset", "normal_class", "image_size", "seed", "val_fraction")


def save_split(split: OneClassSplit, path: str | Path) -> None:
    """Write the split (configuration plus indices or file paths) to split.json, atomically."""
    write_json(path, split.config)


def load_split(run: Run, *, dataset: str, normal_class: int | str, data_root=None,
               image_size: int = 32, seed: int = 0, val_fraction: float = 0.1,
               download: bool = False) -> OneClassSplit:
    """The split of this run folder: read split.json (written by 00_data_prep) and check it
    matches these parameters; without one, make the split and write split.json."""
    params = dict(dataset=dataset, normal_class=normal_class, image_size=image_size, seed=seed,
                  val_fraction=float(val_fraction))
    if run.split_path.is_file():
        saved = json.loads(run.split_path.read_text())
        # image_size only renders the same images (GradCon works at 28 beside 32 for the GANs):
        # the split's identity is checked below through its indices / file paths
        diff = {k: (saved.get(k), v) for k, v in params.items()
                if k != "image_size" and str(saved.get(k)) != str(v)}
        if diff:
            desc = ", ".join(f"{k}={a!r} there vs {b!r} here" for k, (a, b) in diff.items())
            raise ValueError(f"{run.split_path} was made with other parameters ({desc}); run "
                             f"00_data_prep with these parameters or use another run_dir")
        split = load_one_class(dataset, normal_class, image_size=image_size, seed=seed,
                               val_fraction=val_fraction, download=download,
                               data_root=data_root or saved.get("data_root"))
        if "dev" not in saved:
            raise ValueError(f"{run.split_path} predates the development set; run 00_data_prep "
                             f"again (same parameters, same split) to add it")
        if any(split.config[k] != saved[k] for k in ("train", "val", "test", "dev")):
            raise ValueError(f"the data under {split.config['data_root']} no longer matches "
                             f"{run.split_path}; run 00_data_prep again to make a new split")
        return split
    split = load_one_class(dataset, normal_class, data_root=data_root, image_size=image_size,
                           seed=seed, val_fraction=val_fraction, download=download)
    save_split(split, run.split_path)
    return split


def stratified_sample(classes: torch.Tensor, max_images: int, seed: int = 0) -> torch.Tensor:
    """Indices of a seeded sample of `max_images` images, stratified by original class (0 or
    more than there are: all). Uses only the class of each image (the protocol's strata)."""
    n = len(classes)
    if max_images <= 0 or max_images >= n:
        return torch.arange(n)
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(np.arange(n), train_size=max_images, stratify=classes.numpy(),
                               random_state=seed)
    return torch.from_numpy(np.sort(keep))


def subsample_test(split: OneClassSplit, max_images: int, seed: int = 0) -> torch.Tensor:
    """Indices of a seeded subsample of the test set, stratified by original class (0 = all);
    never reads scores."""
    return stratified_sample(split.test_classes, max_images, seed)
