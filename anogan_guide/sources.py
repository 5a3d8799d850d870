"""Where the images come from: scikit-learn's 8x8 digits, torchvision's MNIST, Fashion-MNIST and
CIFAR-10, a folder of images, or generated shapes (for smoke tests).

Each reader returns (train_images uint8 NCHW, train_classes, test_images, test_classes,
class_names, train_refs, test_refs), where refs identify each image in split.json;
`image_folder` also returns the normal class's name. The one-class split made from them: `data`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
DIGITS_TEST_FRACTION = 0.3  # scikit-learn's digits have no official split: a fixed, stratified one
DIGITS_SPLIT_SEED = 0
DEV_ANOMALIES = 1000  # other classes' training images in the development set (all if fewer)


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


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Resize a uint8 batch to size x size (antialiased bilinear), in chunks to bound memory."""
    from torchvision.transforms.v2 import functional as F

    if images.shape[-1] == size and images.shape[-2] == size:
        return images.contiguous()
    out = [F.resize(chunk, [size, size], antialias=True) for chunk in images.split(4096)]
    return torch.cat(out) if out else images.new_zeros((0, images.shape[1], size, size))


def digits():
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


TORCHVISION = {"mnist": ("MNIST", "MNIST"), "fashion-mnist": ("FashionMNIST", "FashionMNIST"),
                "cifar10": ("CIFAR10", "cifar-10-batches-py")}


def torchvision_set(name: str, root: Path, download: bool):
    import torchvision.datasets as tvd

    cls_name, folder = TORCHVISION[name]
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


def list_images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def image_channels(img) -> int:
    """The channel count an image of this PIL mode is read with: 1 for the gray modes, else 3."""
    return 1 if img.mode in ("1", "L", "LA", "I", "I;16", "F") else 3


def image_tensor(img, channels: int) -> torch.Tensor:
    """A PIL image as uint8 (C, H, W) with `channels` channels: PIL's convert, so colour becomes
    gray by ITU-R 601-2 luma and gray is repeated into RGB (how every split reads its files)."""
    from torchvision.transforms.v2.functional import pil_to_tensor

    return pil_to_tensor(img.convert("L" if channels == 1 else "RGB"))


def read_images(paths: list[Path], channels: int | None) -> tuple[list[torch.Tensor], int]:
    """Decode images (PIL through torchvision's loader); every failure names the file.
    Returns uint8 CHW tensors and the channel count (from the first image unless given)."""
    from PIL import Image

    out = []
    for p in paths:
        try:
            with Image.open(p) as img:
                if channels is None:
                    channels = image_channels(img)
                out.append(image_tensor(img, channels))
        except Exception as err:
            raise ValueError(f"cannot read image {p} ({type(err).__name__}); remove or replace "
                             f"the file") from None
    return out, channels


def image_folder(root: Path, normal_class, image_size: int, seed: int):
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
    if list_images(train_dir) or not train_subdirs:  # layout A
        normal = "normal"
        for needed in ("normal", "abnormal"):
            if needed not in test_names:
                raise FileNotFoundError(f"folder dataset: {test_dir / needed} is missing; put test "
                                        f"images in test/normal/ and test/abnormal/")
        test_names = ["normal", "abnormal"]
        train_paths = list_images(train_dir)
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
            found = list_images(train_dir / name) if name in train_subdirs else []
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
        found = list_images(test_dir / name)
        test_paths += found
        test_classes += [ci] * len(found)
    if not test_paths:
        raise ValueError(f"folder dataset: no images under {test_dir}; add test images")
    train_list, channels = read_images(train_paths, None)
    test_list, _ = read_images(test_paths, channels)
    train = torch.stack([resize(x.unsqueeze(0), image_size)[0] for x in train_list])
    test = torch.stack([resize(x.unsqueeze(0), image_size)[0] for x in test_list])
    rel = [str(p.relative_to(root)) for p in train_paths]
    rel_test = [str(p.relative_to(root)) for p in test_paths]
    return (train, torch.from_numpy(classes[keep]), test, torch.tensor(test_classes), test_names,
            rel, rel_test, normal)


SYNTHETIC_SHAPES = ("disc", "square", "cross", "ring")  # classes 0, 1, 2, 3


def synthetic(n_train: int = 240, n_test: int = 60, size: int = 32):
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
