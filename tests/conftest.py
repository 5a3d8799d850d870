import os
from pathlib import Path

import matplotlib
import pytest
import torch

matplotlib.use("Agg")
os.environ.setdefault("ANOGAN_GUIDE_QUIET", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ANOGAN_GUIDE_MNIST_ROOT", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    if not (SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip(f"MNIST not found under {SHARED_DATA} (set ANOGAN_GUIDE_MNIST_ROOT)")
    return SHARED_DATA


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors: one thread avoids OpenMP barrier stalls when the CPU is shared (a module
    asks for it with `pytestmark = pytest.mark.usefixtures("one_thread")`)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def train_interrupted_and_straight(tmp_path, monkeypatch):
    """`f(module, split, config)`: trains with `module.train` straight through and, in a second
    run folder, interrupted in its second epoch (after two optimiser steps) and then resumed
    with other global random states. Returns (straight run, interrupted run, the resumed
    training's result), for the caller to compare the two last checkpoints."""
    import dataclasses

    import anogan_guide as ag
    from anogan_guide.training import TrainingLoop

    def train(module, split, config):
        ag.seed_everything(0)
        straight = ag.open_run(tmp_path / "straight")
        module.train(split, config, straight)

        interrupted = ag.open_run(tmp_path / "interrupted")
        original_record = TrainingLoop.record

        def record(self, step, **losses):
            if self.epoch == 1 and step == 1:
                raise KeyboardInterrupt
            return original_record(self, step, **losses)

        ag.seed_everything(0)
        monkeypatch.setattr(TrainingLoop, "record", record)
        with pytest.raises(KeyboardInterrupt):
            module.train(split, config, interrupted)
        monkeypatch.setattr(TrainingLoop, "record", original_record)
        assert module.load(interrupted, which="last").epoch == 1

        ag.seed_everything(123)  # resuming restores every random state from the checkpoint
        resumed = module.train(split, dataclasses.replace(config, resume=True), interrupted)
        return straight, interrupted, resumed

    return train
