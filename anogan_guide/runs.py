"""Run folders, atomic writes, checkpoints, seeding, device choice and progress bars.

torch is imported by the functions that use it (seeding, the device, checkpoints), not here: the
command line (`anogan-guide run`, `sweep`) reads and writes run folders without it, and every
`anogan-guide` process then starts in a fraction of a second instead of about 3.5 s.
"""

from __future__ import annotations

import fcntl
import json
import os
import random
import socket
import sys
import tempfile
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from tqdm.auto import tqdm

if TYPE_CHECKING:
    import torch

REPO_ROOT = Path(__file__).resolve().parent.parent


def quiet() -> bool:
    """True when ANOGAN_GUIDE_QUIET=1: every progress bar of the package stays silent (CI logs)."""
    return os.environ.get("ANOGAN_GUIDE_QUIET", "0") not in ("", "0", "false", "False")


def progress(iterable: Iterable | None = None, **kwargs) -> tqdm:
    """The one progress bar of the package (tqdm.auto: a widget in Jupyter, text elsewhere). In a
    kernel that `anogan-guide run` started, a text bar on the terminal the command runs in
    (ANOGAN_GUIDE_PROGRESS=terminal; the kernel's own stderr is that terminal)."""
    kwargs.setdefault("disable", quiet())
    kwargs.setdefault("dynamic_ncols", True)
    if os.environ.get("ANOGAN_GUIDE_PROGRESS") == "terminal":
        from tqdm.std import tqdm as text_bar

        return text_bar(iterable, file=sys.__stderr__, **kwargs)
    return tqdm(iterable, **kwargs)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch, and ask torch for deterministic algorithms where it has them."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.benchmark = False
    torch.use_deterministic_algorithms(True, warn_only=True)


def pick_device(device: str = "auto") -> torch.device:
    """"auto" is CUDA when present, else the CPU; anything else is passed to torch.device."""
    import torch

    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        chosen = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"device {device!r} is not a torch device; use 'auto', 'cpu' or 'cuda'") from err
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} asked for CUDA but none is available; use 'auto' or 'cpu'")
    return chosen


# ---------------------------------------------------------------------------------------------
# Atomic writes: write a temporary file beside the target, then rename it over the target.


@contextmanager
def atomic_path(path: str | Path):
    """Yield a temporary path beside `path`; on success it is renamed to `path`, on error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600 files; give the usual permissions
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


LOCK_NAME = ".anogan-guide.lock"


class RunInUse(RuntimeError):
    """Another process is executing notebooks into the same run folder; one line."""


@contextmanager
def run_lock(folder: str | Path):
    """Hold the run folder `folder` for this process: a second holder (another `anogan-guide
    run`, another sweep's run of the same class and seed) gets RunInUse at once. An advisory
    lock (flock) on <folder>/.anogan-guide.lock, released when the process ends however it ends."""
    path = Path(folder) / LOCK_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "another process"
            raise RunInUse(f"run folder {folder} is in use by another anogan-guide run "
                           f"({holder}); wait for it to finish or stop it, or choose another "
                           f"--out") from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        f.flush()
        yield


def write_json(path: str | Path, data: Any) -> None:
    """Write JSON atomically, keys in the given order, with a trailing newline."""
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")


def save_image_grid(images: torch.Tensor, path: str | Path, *, value_range=(0.0, 1.0), nrow=8):
    """Save a batch of images as one PNG grid (torchvision's save_image), atomically."""
    from torchvision.utils import save_image

    lo, hi = value_range
    images = ((images.detach().float().cpu() - lo) / (hi - lo)).clamp(0, 1)
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        save_image(images, f, nrow=nrow, padding=2, format="png")


# ---------------------------------------------------------------------------------------------
# The run folder


@dataclass(frozen=True)
class Run:
    """The folder one run writes to: checkpoints, progress images, test images, split, metrics."""

    root: Path

    @property
    def model_saves(self) -> Path:
        return self.root / "model_saves"

    @property
    def train_img(self) -> Path:
        return self.root / "train_img"

    @property
    def test_imgs(self) -> Path:
        return self.root / "test_imgs"

    @property
    def scores(self) -> Path:
        return self.root / "scores"

    @property
    def split_path(self) -> Path:
        return self.root / "split.json"

    @property
    def metrics_path(self) -> Path:
        return self.root / "metrics.json"

    def checkpoint(self, method: str, which: str = "last") -> Path:
        """model_saves/{method}_{which}.pt, e.g. anogan_last.pt or ganomaly_best.pt."""
        return self.model_saves / f"{method}_{which}.pt"

    def epoch_grid(self, method: str, epoch: int) -> Path:
        """train_img/{method}_epoch{epoch:03d}.png: the image grid saved after an epoch."""
        return self.train_img / f"{method}_epoch{epoch:03d}.png"


def epoch_grids(train_img: str | Path, method: str) -> list[Path]:
    """The grids Run.epoch_grid names for `method` in the folder `train_img`, by epoch (999
    before 1000)."""
    prefix = f"{method}_epoch"
    grids = [p for p in Path(train_img).glob(f"{prefix}*.png") if p.stem[len(prefix):].isdigit()]
    return sorted(grids, key=lambda p: int(p.stem[len(prefix):]))


def open_run(run_dir: str | Path | None = None) -> Run:
    """Create (if needed) and return the run folder; "" or None means the repository root."""
    root = Path(run_dir).expanduser().resolve() if run_dir else REPO_ROOT
    run = Run(root)
    for folder in (run.root, run.model_saves, run.train_img, run.test_imgs, run.scores):
        folder.mkdir(parents=True, exist_ok=True)
    return run


# ---------------------------------------------------------------------------------------------
# Checkpoints: one format for every method.
#
# {"format": 1, "method", "config", "epoch", "models": {name: state_dict},
#  "optimizers": {name: state_dict}, "rng": {...}, "metrics": {...}, "history": {...},
#  "extra": {name: tensor}}
# Everything in it is a tensor, a number, a string or a container of those, so it loads with
# torch.load(weights_only=True).

CHECKPOINT_FORMAT = 1


def rng_state(*generators: torch.Generator) -> dict:
    """The state of every random generator a training run uses, in a weights_only-safe form."""
    import torch

    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, py_state, gauss = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": {"version": version, "state": list(py_state), "gauss": gauss},
        "generators": [g.get_state() for g in generators],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict, *generators: torch.Generator) -> None:
    """Restore what rng_state() captured."""
    import torch

    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    for gen, saved in zip(generators, state["generators"], strict=True):
        gen.set_state(saved)
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def save_checkpoint(path: str | Path, *, method: str, config: dict, epoch: int,
                    models: dict[str, torch.nn.Module], optimizers: dict[str, torch.optim.Optimizer],
                    rng: dict, metrics: dict | None = None, history: dict | None = None,
                    extra: dict[str, torch.Tensor] | None = None) -> None:
    """Write one checkpoint dict atomically (see the format above)."""
    import torch

    checkpoint = {
        "format": CHECKPOINT_FORMAT,
        "method": method,
        "config": config,
        "epoch": epoch,
        "models": {name: m.state_dict() for name, m in models.items()},
        "optimizers": {name: o.state_dict() for name, o in optimizers.items()},
        "rng": rng,
        "metrics": metrics or {},
        "history": history or {},
        "extra": {k: v.detach().cpu() for k, v in (extra or {}).items()},
    }
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used here (missing, other method, other architecture)."""


def read_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Load a checkpoint dict with torch.load(weights_only=True)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}; run the method's training notebook first "
                              f"with the same run_dir")
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path} is not a readable checkpoint ({type(err).__name__}); "
                              f"delete it and train again") from err
    if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path} is not an anogan_guide checkpoint (format "
                              f"{CHECKPOINT_FORMAT}); delete it and train again")
    return checkpoint


def restore_models(checkpoint: dict, models: dict[str, torch.nn.Module],
                   optimizers: dict[str, torch.optim.Optimizer] | None = None,
                   path: str | Path = "checkpoint") -> None:
    """Load model (and optimizer) states; a mismatch names the checkpoint and the fix."""
    for name, model in models.items():
        try:
            model.load_state_dict(checkpoint["models"][name])
        except (KeyError, RuntimeError) as err:
            first = str(err).strip().splitlines()[0][:160]
            raise CheckpointError(
                f"{path} does not fit this {name} ({first}); it was written for config "
                f"{checkpoint.get('config')} - use the same parameters or another run_dir"
            ) from None
    for name, opt in (optimizers or {}).items():
        opt.load_state_dict(checkpoint["optimizers"][name])


def load_config_checked(checkpoint: dict, config: dict, path: str | Path, keys: Iterable[str]):
    """Refuse to resume when an architecture-defining config value differs from the checkpoint's."""
    saved = checkpoint.get("config", {})
    diff = {k: (saved.get(k), config.get(k)) for k in keys if saved.get(k) != config.get(k)}
    if diff:
        desc = ", ".join(f"{k}={old!r} there vs {new!r} here" for k, (old, new) in diff.items())
        raise CheckpointError(f"{path} was written for another architecture ({desc}); use the "
                              f"same parameters, another run_dir, or resume=False")


# ---------------------------------------------------------------------------------------------


def config_from_dict(config_class: type, data: dict):
    """A config dataclass from a checkpoint's config dict, ignoring keys the class does not have
    (the checkpoint also records image_size, channels, ...)."""
    from dataclasses import fields

    names = {f.name for f in fields(config_class)}
    return config_class(**{k: v for k, v in data.items() if k in names})


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """Run fn() and return (result, seconds), synchronising CUDA so the time is real."""
    import time

    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    result = fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return result, time.perf_counter() - start
