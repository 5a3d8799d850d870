import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
os.environ.setdefault("ANOGAN_GUIDE_QUIET", "1")

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("ANOGAN_GUIDE_MNIST_ROOT", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def mnist_root() -> Path:
    if not (SHARED_DATA / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file():
        pytest.skip(f"MNIST not found under {SHARED_DATA} (set ANOGAN_GUIDE_MNIST_ROOT)")
    return SHARED_DATA
