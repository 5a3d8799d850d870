"""Datasets and the one-class split every method uses.

Protocol (../shared/design/ALGORITHMS.md): train = the official train images of the normal class
minus a seeded `val_fraction` held out as validation normals; test = the full official test set,
every other class anomalous. The development set (`dev`): the validation normals against a
seeded, class-stratified sample of the *other* classes' training images, so that the guidebook's
global defaults are chosen without looking at a test image. Images are kept in memory as uint8
(N, C, S, S), resized once; each method asks for its value range with `ImageSet.in_range`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .runs import Run, write_json

DATASETS = ("digits", "mnist", "fashion-mnist", "cifar10", "folder", "synthetic")
IMAGE_SIZES = (16, 28, 32, 64)
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DIGITS_TEST_FRACTION = 0.3  # scikit-learn's digits have no official split: a fixed, stratified one
DIGITS_SPLIT_SEED = 0
DEV_ANOMALIES = 1000  # other classes' training images in the development set (all if fewer)


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


# ---------------------------------------------------------------------------------------------
# Raw sources: each returns (train_images uint8 NCHW, train_classes, test_images, test_classes,
# class_names, train_refs, test_refs), where refs identify each image in split.json.


def _resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 batch to size x size (antialiased bilinear), in chunks to bound memory."""
    from torchvision.transforms.v2 import functional as F

    if images.shape[-1] == size and images.shape[-2] == size:
        return images.contiguous()
    out = [F.resize(chunk, [size, size], antialias=True) for chunk in images.split(4096)]
    return torch.cat(out) if out else images.new_zeros((0, images.shape[1], size, size))


def _digits():
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = torch.from_numpy(np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8))
    images = images.unsqueeze(1)
    classes = torch.from_numpy(bunch.target.astype(np.int64))
    idx_train, idx_test = train_test_split(
        np.arange(len(classes)), test_size=DIGITS_TEST_FRACTION, stratify=bunch.target,
        random_state=DIGITS_SPLIT_SEED)
    idx_train, idx_test = np.sort(idx_train), np.sort(idx_test)
    names = [str(i) for i in range(10)]
    return (images[idx_train], classes[idx_train], images[idx_test], classes[idx_test], names,
            idx_train.tolist(), idx_test.tolist())


_TORCHVISION = {"mnist": ("MNIST", "MNIST"), "fashion-mnist": ("FashionMNIST", "FashionMNIST"),
                "cifar10": ("CIFAR10", "cifar-10-batches-py")}


def _torchvision(name: str, root: Path, download: bool):
    import torchvision.datasets as tvd

    cls_name, folder = _TORCHVISION[name]
    cls = getattr(tvd, cls_name)
    parts = []
    for train in (True, False):
        try:
            ds = cls(root=str(root), train=train, download=download)
        except RuntimeError as err:
            where = root / folder / ("raw" if name != "cifar10" else "")
            raise FileNotFoundError(
                f"{name} files not found (or corrupt) under {where}; pass data_root=<folder that "
                f"holds {folder}/> or download=True (-p download true) to fetch them") from err
        data = torch.as_tensor(np.asarray(ds.data))
        data = data.permute(0, 3, 1, 2) if data.ndim == 4 else data.unsqueeze(1)
        parts += [data.contiguous(), torch.as_tensor(np.asarray(ds.targets), dtype=torch.long)]
    names = [str(c) for c in range(10)]
    return (*parts, names, list(range(len(parts[0]))), list(range(len(parts[2]))))


def _list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _read_images(paths: list[Path], channels: int | None) -> tuple[list[torch.Tensor], int]:
    """Decode images (PIL through torchvision's loader); every failure names the file.
    Returns uint8 CHW tensors and the channel count (from the first image unless given)."""
    from PIL import Image
    from torchvision.transforms.v2.functional import pil_to_tensor

    out = []
    for p in paths:
        try:
            with Image.open(p) as img:
                if channels is None:
                    channels = 1 if img.mode in ("1", "L", "LA", "I", "I;16", "F") else 3
                out.append(pil_to_tensor(img.convert("L" if channels == 1 else "RGB")))
        except Exception as err:
            raise ValueError(f"cannot read image {p} ({type(err).__name__}); remove or replace "
                             f"the file") from None
    return out, channels


def _folder(root: Path, normal_class, image_size: int, seed: int):
    """Layout A: train/ holds normal images, test/normal/ and test/abnormal/.
    Layout B: train/<class>/ and test/<class>/, `normal_class` naming the normal folder. Of the
    other classes' training images only the development sample (`dev_indices`) is read."""
    train_dir, test_dir = root / "train", root / "test"
    for d in (train_dir, test_dir):
        if not d.is_dir():
            raise FileNotFoundError(
                f"folder dataset: {d} does not exist; data_root needs train/ (normal images, or one "
                f"subfolder per class) and test/ (normal/ and abnormal/, or one subfolder per class)")
    test_names = sorted(p.name for p in test_dir.iterdir() if p.is_dir())
    train_subdirs = sorted(p.name for p in train_dir.iterdir() if p.is_dir())
    if _list_images(train_dir) or not train_subdirs:  # layout A
        normal = "normal"
        for needed in ("normal", "abnormal"):
            if needed not in test_names:
                raise FileNotFoundError(f"folder dataset: {test_dir / needed} is missing; put test "
                                        f"images in test/normal/ and test/abnormal/")
        test_names = ["normal", "abnormal"]
        train_paths = _list_images(train_dir)
        train_classes = [0] * len(train_paths)
    else:  # layout B
        normal = str(normal_class)
        if normal not in train_subdirs:
            raise ValueError(f"normal_class {normal_class!r} is not a folder of {train_dir}; use "
                             f"one of {train_subdirs}")
        if normal not in test_names:
            raise FileNotFoundError(f"folder dataset: {test_dir / normal} is missing; the test "
                                    f"folder needs a subfolder for the normal class too")
        train_paths, train_classes = [], []
        for ci, name in enumerate(test_names):  # other classes: development anomalies
            found = _list_images(train_dir / name) if name in train_subdirs else []
            train_paths += found
            train_classes += [ci] * len(found)
    normal_index = test_names.index(normal)
    if normal_index not in train_classes:
        where = train_dir if normal == "normal" and not train_subdirs else train_dir / normal
        raise ValueError(f"folder dataset: no images in {where}; add normal training images "
                         f"({', '.join(IMAGE_EXTENSIONS[:3])}, ...)")
    classes = np.asarray(train_classes)
    keep = np.sort(np.concatenate([np.flatnonzero(classes == normal_index),
                                   dev_indices(classes, normal_index, seed)]))
    train_paths = [train_paths[i] for i in keep]
    test_paths, test_classes = [], []
    for ci, name in enumerate(test_names):
        found = _list_images(test_dir / name)
        test_paths += found
        test_classes += [ci] * len(found)
    if not test_paths:
        raise ValueError(f"folder dataset: no images under {test_dir}; add test images")
    train_list, channels = _read_images(train_paths, None)
    test_list, _ = _read_images(test_paths, channels)
    train = torch.stack([_resize(x.unsqueeze(0), image_size)[0] for x in train_list])
    test = torch.stack([_resize(x.unsqueeze(0), image_size)[0] for x in test_list])
    rel = [str(p.relative_to(root)) for p in train_paths]
    rel_test = [str(p.relative_to(root)) for p in test_paths]
    return (train, torch.from_numpy(classes[keep]), test, torch.tensor(test_classes), test_names,
            rel, rel_test, normal)


SYNTHETIC_SHAPES = ("disc", "square", "cross", "ring")  # classes 0, 1, 2, 3


def _synthetic(n_train: int = 240, n_test: int = 60, size: int = 32):
    """Tiny generated shapes (for smoke tests): class k is SYNTHETIC_SHAPES[k] at a random
    position and size, with noise."""
    rng = np.random.default_rng(12345)
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)

    def draw(kind: int) -> np.ndarray:
        r = rng.uniform(0.18, 0.3) * size
        cy, cx = rng.uniform(r, size - r, 2)
        dy, dx = yy - cy, xx - cx
        if kind == 0:
            img = dy**2 + dx**2 <= r**2
        elif kind == 1:
            img = (np.abs(dy) <= r * 0.8) & (np.abs(dx) <= r * 0.8)
        elif kind == 2:
            img = ((np.abs(dy) <= r * 0.25) | (np.abs(dx) <= r * 0.25)) & (np.abs(dy) <= r) & (
                np.abs(dx) <= r)
        else:
            d = np.sqrt(dy**2 + dx**2)
            img = (d <= r) & (d >= r * 0.6)
        noise = rng.normal(0, 12, (size, size))
        return np.clip(img * 220.0 + 20 + noise, 0, 255).astype(np.uint8)

    def make(n):
        classes = np.repeat(np.arange(len(SYNTHETIC_SHAPES)), n)
        imgs = np.stack([draw(k) for k in classes])[:, None]
        return torch.from_numpy(imgs), torch.from_numpy(classes)

    tr, trc = make(n_train)
    te, tec = make(n_test)
    names = [str(k) for k in range(len(SYNTHETIC_SHAPES))]
    return tr, trc, te, tec, names, list(range(len(tr))), list(range(len(te)))


# ---------------------------------------------------------------------------------------------


def dev_indices(train_classes, normal_index: int, seed: int) -> np.ndarray:
    """Which training images of the *other* classes form the development anomalies: the same
    seeded share of every class (so the classes keep their proportions), DEV_ANOMALIES in all
    (every one when there are fewer). Depends only on the class of each training image and the
    seed."""
    classes = np.asarray(train_classes)
    others = np.flatnonzero(classes != normal_index)
    share = min(1.0, DEV_ANOMALIES / len(others)) if len(others) else 0.0
    rng = np.random.default_rng([seed, 1])  # its own stream (validation: `seed`)
    picked = [rng.permutation(np.flatnonzero(classes == c))[:int(round(share * n))]
              for c, n in zip(*np.unique(classes[others], return_counts=True), strict=True)]
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


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
        tr, trc, te, tec, names, refs, test_refs, normal = _folder(root, normal_class, image_size,
                                                                    seed)
        normal_index = names.index(normal)
    else:
        if dataset == "digits":
            tr, trc, te, tec, names, refs, test_refs = _digits()
        elif dataset == "synthetic":
            tr, trc, te, tec, names, refs, test_refs = _synthetic()
        else:
            tr, trc, te, tec, names, refs, test_refs = _torchvision(dataset, root, download)
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
    train_imgs = _resize(tr[torch.from_numpy(train_idx)], image_size)
    val_imgs = _resize(tr[torch.from_numpy(val_idx)], image_size)
    dev_imgs = _resize(tr[torch.from_numpy(dev_idx)], image_size)
    test_imgs = _resize(te, image_size)
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
