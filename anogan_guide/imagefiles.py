"""New images for a trained detector: found on disk, decoded and prepared as the run's split
prepared its own, streamed in batches.

Everything a detector is given (paths, folders, PIL images, uint8 arrays, tensors) becomes uint8
(C, S, S) at each size the detector's networks need, through the split's own code
(`sources.image_tensor`: PIL's convert to the split's channels; `sources.resize`: the antialiased
bilinear resize every split uses). Files are decoded in a torch DataLoader, a batch at a time, so
memory does not grow with the number of images; an unreadable file becomes an error row, not an
exception, and the rest are scored.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from .sources import IMAGE_EXTENSIONS, image_channels, image_tensor, resize


@dataclass(frozen=True)
class View:
    """What one network reads: square images of `image_size` pixels with `channels` channels."""

    image_size: int
    channels: int

    @property
    def key(self) -> str:
        return f"{self.image_size}x{self.channels}"


# ---------------------------------------------------------------------------------------------
# Finding files


def find_images(targets: Sequence[str | Path]) -> tuple[list[Path], list[str]]:
    """The image files named by `targets`: a file as it is (whatever its extension; a file that is
    no image is reported when read), a folder searched recursively for the extensions the
    `folder` dataset reads. Returns the files (sorted within each folder) and one line per
    target that gave nothing (missing path, folder without images)."""
    files, problems = [], []
    for target in targets:
        path = Path(target).expanduser()
        if path.is_file():
            files.append(path)
        elif path.is_dir():
            found = sorted(p for p in path.rglob("*")
                           if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)
            if not found:
                problems.append(f"no images under {path} (looked for "
                                f"{', '.join(IMAGE_EXTENSIONS)}, in subfolders too)")
            files += found
        else:
            problems.append(f"{path} does not exist; give image files or folders of images")
    return files, problems


# ---------------------------------------------------------------------------------------------
# In-memory images -> native uint8 (C, H, W)


def _from_float(x: torch.Tensor, what: str) -> torch.Tensor:
    if x.numel() and (float(x.min()) < 0.0 or float(x.max()) > 1.0):
        raise ValueError(f"{what}: float images must lie in [0, 1] (got {float(x.min()):.3g} to "
                         f"{float(x.max()):.3g}); pass uint8 0-255 or divide by 255")
    return x.mul(255.0).round_().to(torch.uint8)


def as_native(image, what: str = "image") -> torch.Tensor | list[torch.Tensor]:
    """One image (or a batch) as uint8 (C, H, W) at its own size and channels.

    PIL images; NumPy arrays in NumPy's layout (H, W), (H, W, C) or (N, H, W, C); torch tensors
    in torchvision's layout (C, H, W) or (N, C, H, W). uint8 is 0-255, float is [0, 1]."""
    from PIL import Image

    if isinstance(image, Image.Image):
        return image_tensor(image, image_channels(image))
    if isinstance(image, np.ndarray):
        x = torch.from_numpy(np.array(image))  # a copy: the array may be read-only (PIL)
        if x.ndim == 2:
            x = x.unsqueeze(0)
        elif x.ndim == 3:
            x = x.permute(2, 0, 1)
        elif x.ndim == 4:
            x = x.permute(0, 3, 1, 2)
        else:
            raise ValueError(f"{what}: a NumPy image is (H, W), (H, W, C) or (N, H, W, C); got "
                             f"shape {image.shape}")
    elif isinstance(image, torch.Tensor):
        x = image.detach().cpu()
        if x.ndim == 2:
            x = x.unsqueeze(0)
        if x.ndim not in (3, 4):
            raise ValueError(f"{what}: a tensor image is (C, H, W) or (N, C, H, W); got shape "
                             f"{tuple(image.shape)}")
    else:
        raise TypeError(f"{what}: {type(image).__name__} is not an image; give a path, a folder, "
                        f"a PIL image, a uint8 array or a tensor")
    if x.dtype.is_floating_point:
        x = _from_float(x, what)
    elif x.dtype != torch.uint8:
        raise ValueError(f"{what}: images must be uint8 (0-255) or float in [0, 1]; got {x.dtype}")
    if x.shape[-3] not in (1, 3, 4):
        raise ValueError(f"{what}: {x.shape[-3]} channels; images have 1 (gray), 3 (RGB) or 4 "
                         f"(RGBA). NumPy arrays are read as (H, W, C), tensors as (C, H, W)")
    return list(x) if x.ndim == 4 else x


def prepare(native: torch.Tensor, view: View) -> torch.Tensor:
    """A native uint8 (C, H, W) image as the split prepared its own: its channels converted by
    PIL (`sources.image_tensor`) when they differ, then resized (`sources.resize`)."""
    from torchvision.transforms.v2.functional import to_pil_image

    if native.shape[0] != view.channels:
        native = image_tensor(to_pil_image(native), view.channels)
    return resize(native.unsqueeze(0), view.image_size)[0]


# ---------------------------------------------------------------------------------------------
# Datasets and batches


@dataclass
class Item:
    index: int
    name: str
    views: dict[str, torch.Tensor] | None  # view key -> uint8 (C, S, S); None when unreadable
    channels: int = 0  # the image's own channel count (before conversion)
    original: torch.Tensor | None = None  # native uint8 (C, H, W), kept for maps and overlays
    error: str = ""


class _Images(Dataset):
    def __init__(self, views: Sequence[View], keep_original: bool) -> None:
        self.views, self.keep_original = list(views), keep_original

    def _item(self, index: int, name: str, native: torch.Tensor) -> Item:
        views = {v.key: prepare(native, v) for v in self.views}
        return Item(index, name, views, int(native.shape[0]),
                    native if self.keep_original else None)


class FileImages(_Images):
    """Image files decoded with PIL (as the `folder` dataset reads them), one Item each."""

    def __init__(self, paths: Sequence[Path], views: Sequence[View], keep_original: bool = False):
        super().__init__(views, keep_original)
        self.paths = list(paths)
        self.channels = views[0].channels

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> Item:
        from PIL import Image

        path = self.paths[index]
        try:
            with Image.open(path) as img:
                own = image_channels(img)
                # converted straight to the split's channels, as the split read its files
                native = image_tensor(img, self.channels)
                original = image_tensor(img, own) if self.keep_original else None
        except Exception as err:  # a broken or non-image file: named, skipped
            return Item(index, str(path), None,
                        error=f"cannot read image {path} ({type(err).__name__}); skipped")
        item = self._item(index, str(path), native)
        item.channels, item.original = own, original
        return item


class MemoryImages(_Images):
    """Images already in memory (native uint8 (C, H, W) each)."""

    def __init__(self, images: Sequence[torch.Tensor], names: Sequence[str],
                 views: Sequence[View], keep_original: bool = False) -> None:
        super().__init__(views, keep_original)
        self.images, self.names = list(images), list(names)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> Item:
        return self._item(index, self.names[index], self.images[index])


@dataclass
class Batch:
    """A batch of readable images (stacked per view), and the items that could not be read."""

    indices: list[int]
    names: list[str]
    views: dict[str, torch.Tensor]  # view key -> uint8 (B, C, S, S)
    channels: list[int]
    originals: list[torch.Tensor | None]
    errors: list[Item]

    def __len__(self) -> int:
        return len(self.indices)


def collate(items: list[Item]) -> Batch:
    good = [it for it in items if it.views is not None]
    keys = list(good[0].views) if good else []
    return Batch([it.index for it in good], [it.name for it in good],
                 {k: torch.stack([it.views[k] for it in good]) for k in keys},
                 [it.channels for it in good], [it.original for it in good],
                 [it for it in items if it.views is None])


def gather(images, views: Sequence[View], *, keep_original: bool = False
           ) -> tuple[Dataset, list[str]]:
    """A dataset of everything `images` names (see `as_native`, or paths and folders) and one
    line per path that gave nothing."""
    from PIL import Image

    single = (str, Path, Image.Image, np.ndarray, torch.Tensor)
    items = [images] if isinstance(images, single) else list(images)
    if all(isinstance(x, str | Path) for x in items):
        paths, problems = find_images(items)
        return FileImages(paths, views, keep_original), problems
    natives, names = [], []
    for i, x in enumerate(items):
        if isinstance(x, str | Path):
            raise TypeError("give either paths and folders or in-memory images, not both in one "
                            "call")
        got = as_native(x, f"image {i}")
        batch = got if isinstance(got, list) else [got]
        names += [f"image {len(names) + j}" for j in range(len(batch))]
        natives += batch
    return MemoryImages(natives, names, views, keep_original), []


def batches(dataset: Dataset, batch_size: int, workers: int = 0) -> Iterator[Batch]:
    """Batches of a dataset in order, decoded by `workers` processes (0: this one)."""
    workers = workers if isinstance(dataset, FileImages) else 0
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate,
                        num_workers=workers, persistent_workers=False,
                        prefetch_factor=2 if workers else None)
    yield from loader


__all__ = ["Batch", "FileImages", "Item", "MemoryImages", "View", "as_native", "batches",
           "collate", "find_images", "gather", "prepare"]
