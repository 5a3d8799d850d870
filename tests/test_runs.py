"""Run folder, atomic writes, the checkpoint format, resume and the non-finite-loss guard."""

import pytest
import torch
from torch import nn

from anogan_guide import open_run, seed_everything
from anogan_guide.runs import (
    CheckpointError,
    atomic_path,
    pick_device,
    read_checkpoint,
    write_json,
)
from anogan_guide.training import NonFiniteLossError, TrainingLoop, load_trained


def _tiny_training(run, epochs, *, resume=False, stop_after=None, width=4, lr=0.05, poison=None):
    """Train a tiny model on random data with shuffling and dropout (so every RNG matters)."""
    seed_everything(0)
    model = nn.Sequential(nn.Linear(3, width), nn.Dropout(0.3), nn.Linear(width, 1))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    data = torch.utils.data.TensorDataset(torch.randn(40, 3), torch.randn(40, 1))
    gen = torch.Generator().manual_seed(0)
    loader = torch.utils.data.DataLoader(data, batch_size=8, shuffle=True, generator=gen)
    loop = TrainingLoop(run, "tiny", {"width": width, "image_size": 0, "channels": 0},
                        models={"net": model}, optimizers={"adam": opt}, epochs=epochs,
                        resume=resume, arch_keys=("width",), generators=(gen,),
                        extra={"ref": torch.zeros(2)})
    for epoch in loop.epochs():
        for step, (x, y) in loop.steps(loader):
            loss = ((model(x) - y) ** 2).mean()
            if poison is not None and (epoch, step) == poison:
                loss = loss * float("nan")
            opt.zero_grad()
            loss.backward()
            opt.step()
            loop.extra["ref"] = loop.extra["ref"] + 1
            loop.record(step, loss=loss)
        loop.end_epoch(val_loss=loss.item(), images=torch.rand(4, 1, 8, 8))
        if stop_after is not None and epoch + 1 == stop_after:
            break  # like a run killed after this epoch's checkpoint
    return model, loop


def test_resume_gives_the_same_weights(tmp_path):
    straight, _ = _tiny_training(open_run(tmp_path / "a"), 4)
    run_b = open_run(tmp_path / "b")
    _tiny_training(run_b, 4, stop_after=2)
    resumed, loop = _tiny_training(run_b, 4, resume=True)
    assert loop.resumed_from == 2 and loop.epoch == 4
    for p, q in zip(straight.parameters(), resumed.parameters(), strict=True):
        assert torch.equal(p, q)
    assert float(loop.extra["ref"][0]) == 4 * 5  # the extra state was restored and carried on
    assert len(loop.history["loss"]) == 4 * 5  # the loss history survives the restart
    assert sorted(p.name for p in run_b.train_img.iterdir()) == [
        f"tiny_epoch{e:03d}.png" for e in range(1, 5)]


def test_checkpoint_format_and_weights_only(tmp_path):
    run = open_run(tmp_path)
    _tiny_training(run, 2)
    ckpt = torch.load(run.checkpoint("tiny"), weights_only=True)
    assert {"format", "method", "config", "epoch", "models", "optimizers", "rng", "metrics",
            "history", "extra"} <= set(ckpt)
    assert ckpt["epoch"] == 2 and ckpt["method"] == "tiny"
    assert set(ckpt["rng"]) >= {"torch", "numpy", "python", "generators"}
    assert run.checkpoint("tiny", "best").is_file()
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.3), nn.Linear(4, 1))
    loaded = load_trained(run, "tiny", {"net": model}, which="last")
    assert not model.training and loaded["config"]["width"] == 4


def test_checkpoint_from_another_architecture(tmp_path):
    run = open_run(tmp_path)
    _tiny_training(run, 1, width=4)
    with pytest.raises(CheckpointError, match="another architecture .*width=4 there vs 6 here"):
        _tiny_training(run, 2, width=6, resume=True)
    other = nn.Sequential(nn.Linear(3, 6), nn.Dropout(0.3), nn.Linear(6, 1))
    with pytest.raises(CheckpointError, match="does not fit this net") as info:
        load_trained(run, "tiny", {"net": other}, which="last")
    assert "\n" not in str(info.value)


def test_not_a_checkpoint(tmp_path):
    bad = tmp_path / "x.pt"
    bad.write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="not a readable checkpoint"):
        read_checkpoint(bad)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        read_checkpoint(tmp_path / "missing.pt")


def test_non_finite_loss_stops_and_keeps_last_checkpoint(tmp_path):
    run = open_run(tmp_path)
    with pytest.raises(NonFiniteLossError, match=r"loss loss became nan at epoch 2, step 3"):
        _tiny_training(run, 3, poison=(1, 2))
    assert torch.load(run.checkpoint("tiny"), weights_only=True)["epoch"] == 1


def test_atomic_write_leaves_nothing_half_written(tmp_path):
    target = tmp_path / "metrics.json"
    write_json(target, {"a": 1})
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == '{\n  "a": 1\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]
    assert (target.stat().st_mode & 0o777) != 0o600  # not mkstemp's private mode


def test_seed_everything_repeats():
    seed_everything(3)
    a = torch.randn(5)
    seed_everything(3)
    assert torch.equal(a, torch.randn(5))


def test_pick_device():
    assert pick_device("cpu").type == "cpu"
    assert pick_device("auto").type in ("cpu", "cuda")
    with pytest.raises(ValueError, match="not a torch device"):
        pick_device("gpu please")


def test_resume_refuses_other_training_parameters(tmp_path):
    """Resuming with another training parameter would mix two trainings: refused in one line;
    more epochs and the keys a method declares score-only may change."""
    run = open_run(tmp_path)
    loop = TrainingLoop(run, "tiny", {"width": 4, "select": "l_enc_rel", "grad_weight": 0.1},
                        models={"net": nn.Linear(3, 1)}, optimizers={}, epochs=1)
    for _ in loop.epochs():
        loop.end_epoch(val_loss=1.0)
    with pytest.raises(CheckpointError, match="select='l_enc_rel' there vs 'l_enc' here"):
        TrainingLoop(run, "tiny", {"width": 4, "select": "l_enc", "grad_weight": 0.1},
                     models={"net": nn.Linear(3, 1)}, optimizers={}, epochs=1, resume=True)
    again = TrainingLoop(run, "tiny", {"width": 4, "select": "l_enc_rel", "grad_weight": 0.5,
                                       "epochs": 3}, models={"net": nn.Linear(3, 1)},
                         optimizers={}, epochs=3, resume=True, free_keys=("grad_weight",))
    assert again.resumed_from == 1
