"""The one-class data protocol: counts, seeds, layouts, ranges and bad input."""

import json
import pickle
import struct

import numpy as np
import pytest
import torch
from PIL import Image

from anogan_guide import load_one_class, load_split, open_run, save_split
from anogan_guide.data import subsample_test


def test_mnist_class3_protocol(mnist_root):
    split = load_one_class("mnist", 3, data_root=mnist_root, image_size=28)
    assert len(split.train) + len(split.val) == 6131
    assert (len(split.train), len(split.val)) in {(5518, 613), (5517, 614)}
    assert len(split.test) == 10000
    assert int((split.test_labels == 0).sum()) == 1010
    assert bool((split.test_labels == (split.test_classes != 3).long()).all())
    assert split.channels == 1 and split.train[0][0].shape == (1, 28, 28)


def test_mnist_resized_and_val_disjoint(mnist_root):
    split = load_one_class("mnist", 7, data_root=mnist_root, image_size=32, seed=1)
    assert split.train.images.shape[1:] == (1, 32, 32)
    assert not set(split.config["train"]) & set(split.config["val"])


def test_same_seed_same_split_other_seed_other_split():
    a = load_one_class("digits", 0, seed=0)
    b = load_one_class("digits", 0, seed=0)
    c = load_one_class("digits", 0, seed=1)
    assert a.config == b.config and torch.equal(a.train.images, b.train.images)
    assert a.config["val"] != c.config["val"]
    assert a.config["test"] == c.config["test"]  # the test set never depends on the seed


def test_split_json_bytes_identical(tmp_path):
    for name in ("one", "two"):
        save_split(load_one_class("digits", 4, seed=3), tmp_path / f"{name}.json")
    assert (tmp_path / "one.json").read_bytes() == (tmp_path / "two.json").read_bytes()


def test_value_ranges_and_sizes():
    split = load_one_class("digits", 1, image_size=16)
    x, y = split.train[0]
    assert x.dtype == torch.float32 and 0.0 <= x.min() and x.max() <= 1.0 and int(y) == 0
    lo = split.train.in_range(-1, 1).tensors()
    assert lo.min() == -1.0 and lo.max() <= 1.0
    assert split.train.in_range(-1, 1).images is split.train.images  # no copy
    for size in (16, 28, 32, 64):
        assert load_one_class("synthetic", 0, image_size=size).test.images.shape[-1] == size


def test_digits_counts_deterministic():
    split = load_one_class("digits", 0)
    assert split.counts() == {"n_train": 112, "n_val": 12, "n_test": 540, "n_test_normal": 54,
                              "n_test_anomalous": 486, "n_dev_anomalous": 999}


def test_development_set_other_classes_training_images_stratified_and_seeded(mnist_root):
    split = load_one_class("mnist", 3, data_root=mnist_root, image_size=28)
    # 1,000 of the other nine classes' 53,869 training images, each class its share
    assert len(split.dev) in range(995, 1006) and bool((split.dev.labels == 1).all())
    counts = torch.bincount(split.dev_classes, minlength=10)
    assert counts[3] == 0 and counts.sum() == len(split.dev)
    assert all(abs(int(counts[c]) - 1000 * n / 53869) <= 1 for c, n in enumerate(
        [5923, 6742, 5958, 0, 5842, 5421, 5918, 6265, 5851, 5949]) if c != 3)
    # training images, never the normal class's, never a test image (indices into train)
    assert not set(split.config["dev"]) & (set(split.config["train"]) | set(split.config["val"]))
    again = load_one_class("mnist", 3, data_root=mnist_root, image_size=28)
    other = load_one_class("mnist", 3, data_root=mnist_root, image_size=28, seed=1)
    assert again.config["dev"] == split.config["dev"] != other.config["dev"]
    assert torch.equal(again.dev.images, split.dev.images)


def test_development_set_of_small_datasets_takes_every_other_image():
    split = load_one_class("synthetic", 0, image_size=16)  # 4 classes x 240 training images
    assert len(split.dev) == 720 and sorted(set(split.dev_classes.tolist())) == [1, 2, 3]
    assert "development: the 24 validation normals vs 720" in split.summary()


def test_subsample_is_stratified_and_seeded():
    split = load_one_class("digits", 0)
    a, b = subsample_test(split, 100, seed=0), subsample_test(split, 100, seed=0)
    assert torch.equal(a, b) and len(a) == 100
    assert len(set(split.test_classes[a].tolist())) == 10
    assert len(subsample_test(split, 0)) == len(split.test)


def _write_png(path, rgb=False, value=128):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.full((20, 20, 3) if rgb else (20, 20), value, dtype=np.uint8)
    arr[5:15, 5:15] = 255 - value
    Image.fromarray(arr).save(path)


def test_folder_layout_normal_abnormal(tmp_path):
    for i in range(6):
        _write_png(tmp_path / "train" / f"n{i}.png", rgb=True, value=10 * i)
    for i in range(3):
        _write_png(tmp_path / "test" / "normal" / f"a{i}.png", rgb=True)
        _write_png(tmp_path / "test" / "abnormal" / f"b{i}.jpg", rgb=True, value=200)
    split = load_one_class("folder", 0, data_root=tmp_path, image_size=16, val_fraction=0.5)
    assert split.channels == 3 and split.train.images.shape[1:] == (3, 16, 16)
    assert (len(split.train), len(split.val), len(split.test)) == (3, 3, 6)
    assert split.test_labels.tolist() == [0, 0, 0, 1, 1, 1]  # normal/ first, then abnormal/
    assert split.config["train"][0].startswith("train/")
    assert not split.has_dev and split.config["dev"] == []  # a folder of normal images only


def test_folder_layout_class_per_subfolder(tmp_path):
    for cls in ("good", "scratch", "dent"):
        for i in range(4):
            _write_png(tmp_path / "train" / cls / f"{i}.png")
            _write_png(tmp_path / "test" / cls / f"{i}.png")
    split = load_one_class("folder", "good", data_root=tmp_path, image_size=32)
    assert split.channels == 1
    assert len(split.train) + len(split.val) == 4 and len(split.test) == 12
    assert int((split.test_labels == 0).sum()) == 4
    # the other classes' training images are the development anomalies
    assert sorted(split.config["dev"]) == sorted(f"train/{c}/{i}.png" for c in ("scratch", "dent")
                                                 for i in range(4))
    assert [split.class_names[c] for c in split.dev_classes] == ["dent"] * 4 + ["scratch"] * 4
    with pytest.raises(ValueError, match="normal_class 'bolt' is not a folder"):
        load_one_class("folder", "bolt", data_root=tmp_path)


def _write_idx(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    dims = array.shape
    magic = 0x0800 + len(dims)  # unsigned byte data
    with open(path, "wb") as f:
        f.write(struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in dims))
        f.write(array.astype(np.uint8).tobytes())


def test_fashion_mnist_loader_on_generated_files(tmp_path):
    rng = np.random.default_rng(0)
    raw = tmp_path / "FashionMNIST" / "raw"
    for prefix, n in (("train", 50), ("t10k", 30)):
        _write_idx(raw / f"{prefix}-images-idx3-ubyte", rng.integers(0, 255, (n, 28, 28)))
        _write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    split = load_one_class("fashion-mnist", 2, data_root=tmp_path, image_size=28)
    assert len(split.train) + len(split.val) == 5 and len(split.test) == 30
    assert int((split.test_labels == 0).sum()) == 3


def test_cifar10_loader_on_generated_files(tmp_path, monkeypatch):
    import torchvision.datasets.cifar as tv_cifar

    rng = np.random.default_rng(0)
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        batch = {"data": rng.integers(0, 255, (20, 3072), dtype=np.uint8),
                 "labels": list(np.arange(20) % 10)}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({"label_names": [f"c{i}" for i in range(10)]}, f)
    # the generated pickles cannot match torchvision's md5 sums; everything after that is real
    monkeypatch.setattr(tv_cifar, "check_integrity", lambda *args, **kwargs: True)
    split = load_one_class("cifar10", 5, data_root=tmp_path, image_size=32)
    assert split.channels == 3 and split.test.images.shape == (20, 3, 32, 32)
    assert len(split.train) + len(split.val) == 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        (dict(dataset="imagenet", normal_class=0), "unknown dataset 'imagenet'; use one of"),
        (dict(dataset="digits", normal_class=12), "normal_class 12 is not a class of digits"),
        (dict(dataset="digits", normal_class=0, image_size=48), "image_size 48 is not supported"),
        (dict(dataset="digits", normal_class=0, val_fraction=1.0), "val_fraction must be between"),
        (dict(dataset="digits", normal_class=0, val_fraction=0), "val_fraction must be between"),
        (dict(dataset="folder", normal_class=0), "needs data_root"),
    ],
)
def test_bad_input_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message) as info:
        load_one_class(**kwargs)
    assert "\n" not in str(info.value)


def test_missing_files_say_where_and_how(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        load_one_class("mnist", 0, data_root=tmp_path)
    msg = str(info.value)
    assert str(tmp_path / "MNIST" / "raw") in msg and "download=True" in msg and "\n" not in msg


def test_empty_folder_and_unreadable_image(tmp_path):
    (tmp_path / "train").mkdir()
    for sub in ("normal", "abnormal"):
        _write_png(tmp_path / "test" / sub / "x.png")
    with pytest.raises(ValueError, match="no images in"):
        load_one_class("folder", 0, data_root=tmp_path)
    _write_png(tmp_path / "train" / "ok.png")
    _write_png(tmp_path / "train" / "ok2.png")
    (tmp_path / "train" / "broken.png").write_bytes(b"not a png at all")
    with pytest.raises(ValueError, match=r"cannot read image .*broken\.png"):
        load_one_class("folder", 0, data_root=tmp_path)


def test_load_split_reuses_and_checks_split_json(tmp_path):
    run = open_run(tmp_path)
    first = load_split(run, dataset="digits", normal_class=2, seed=5)
    assert run.split_path.is_file()
    again = load_split(run, dataset="digits", normal_class=2, seed=5)
    assert first.config == again.config
    with pytest.raises(ValueError, match="was made with other parameters .*normal_class"):
        load_split(run, dataset="digits", normal_class=3, seed=5)
    old = json.loads(run.split_path.read_text())
    del old["dev"]  # a split.json written before the development set
    run.split_path.write_text(json.dumps(old))
    with pytest.raises(ValueError, match="predates the development set; run 00_data_prep again"):
        load_split(run, dataset="digits", normal_class=2, seed=5)


def test_folder_reads_only_the_development_sample_of_other_classes(tmp_path, monkeypatch):
    from anogan_guide import sources

    monkeypatch.setattr(sources, "DEV_ANOMALIES", 6)
    for cls, n in (("a", 5), ("b", 20), ("c", 10)):
        for i in range(n):
            _write_png(tmp_path / "train" / cls / f"{i}.png")
        _write_png(tmp_path / "test" / cls / "0.png")
    read = []
    real = sources.read_images
    monkeypatch.setattr(sources, "read_images", lambda paths, ch: (read.extend(paths),
                                                                   real(paths, ch))[1])
    split = load_one_class("folder", "a", data_root=tmp_path, image_size=16)
    assert len(split.dev) == 6 and split.dev_classes.tolist() == [1, 1, 1, 1, 2, 2]  # 20:10
    assert len(read) == 5 + 6 + 3  # the normal class, the development sample, the test images
