"""RotNet: the rotation task, its loss as a score, training, reloading and resuming exactly."""

from __future__ import annotations

import pytest
import torch

import anogan_guide as ag
from anogan_guide import rotation, rotnet
from anogan_guide.nets import RotationClassifier


@pytest.fixture(scope="module")
def split():
    return ag.load_one_class("digits", 4, image_size=16)


def tiny(**kwargs) -> rotnet.RotnetConfig:
    return rotnet.RotnetConfig(**{"epochs": 2, "batch_size": 32, "width": 4, "min_steps_per_epoch": 3,
                                  **kwargs})


def test_rotations_are_quarter_turns_in_label_order():
    x = torch.arange(2 * 1 * 3 * 3, dtype=torch.float).view(2, 1, 3, 3)
    turned, labels = rotation.all_rotations(x)
    assert turned.shape == (8, 1, 3, 3) and labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    assert torch.equal(turned[:2], x)
    assert torch.equal(turned[2], torch.rot90(x[0], 1, (1, 2)))
    assert torch.equal(rotation.rotate(turned[6:], 1), x)  # four quarter turns: back to the start
    with pytest.raises(ValueError, match="square images"):
        rotation.rotate(torch.zeros(1, 1, 3, 4), 1)


def test_the_rotation_loss_is_the_sum_over_turns_of_minus_log_p_of_the_right_turn():
    n = 3
    logits = torch.randn(4 * n, 4, generator=torch.Generator().manual_seed(0))
    terms = rotation.rotation_terms(logits, n)
    log_p = logits.log_softmax(1)
    expected = -sum(log_p[k * n + i, k] for k in range(4) for i in [0])
    assert terms["l_rot"][0].item() == pytest.approx(expected.item(), rel=1e-6)
    sure = torch.full((4 * n, 4), -20.0)
    sure[torch.arange(4 * n), torch.arange(4).repeat_interleave(n)] = 20.0
    right = rotation.rotation_terms(sure, n)
    assert right["acc_rot"].tolist() == [4.0] * n and right["l_rot"].max() < 1e-6
    assert rotation.confusion(sure, n).diag().tolist() == [n] * 4
    with pytest.raises(ValueError, match=r"expected \(12, 4\) rotation logits"):
        rotation.rotation_nll(logits[:5], n)


def test_flips_are_seeded_and_mirror_left_right():
    x = torch.arange(4 * 1 * 2 * 2, dtype=torch.float).view(4, 1, 2, 2)
    a = rotation.random_hflip(x, torch.Generator().manual_seed(3))
    b = rotation.random_hflip(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    for i in range(4):
        assert torch.equal(a[i], x[i]) or torch.equal(a[i], x[i].flip(-1))


def test_the_classifier_takes_any_size_and_refuses_tiny_images():
    for size, channels in ((16, 1), (28, 1), (32, 3)):
        assert RotationClassifier(size, channels, 4)(torch.zeros(2, channels, size, size)).shape == (2, 4)
    with pytest.raises(ValueError, match="at least 8x8"):
        RotationClassifier(4, 1)


def test_training_learns_the_task_and_the_reloaded_model_scores_the_same(split, tmp_path):
    run = ag.open_run(tmp_path)
    trained = rotnet.train(split, tiny(epochs=4, width=8, lr=3e-3), run)
    loss = trained.epoch_history["loss"]
    assert loss[-1] < loss[0] < 1.5  # chance is log 4 = 1.386 per turn
    table = rotnet.score(trained, split.test)
    assert set(table) == {"l_rot", "acc_rot", "score"} and len(table["score"]) == len(split.test)
    reloaded = rotnet.load(run)
    assert reloaded.epoch == trained.epoch and reloaded.config.width == 8
    again = rotnet.score(reloaded, split.test)
    torch.testing.assert_close(again["score"], table["score"])
    # score_flips: the mean of the image's and its mirror image's l_rot; without, l_rot itself
    plain = rotnet.score(reloaded, split.test, score_flips=False)
    torch.testing.assert_close(plain["score"], plain["l_rot"])
    assert not torch.allclose(table["score"], table["l_rot"])
    assert run.checkpoint("rotnet", "best").is_file()


def test_resume_after_interruption_gives_identical_weights(split, train_interrupted_and_straight):
    straight, interrupted, resumed = train_interrupted_and_straight(rotnet, split, tiny(epochs=3))
    a, b = rotnet.load(straight, which="last"), rotnet.load(interrupted, which="last")
    assert a.epoch == b.epoch == 3
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert resumed.epoch_history["val_l_rot"] == a.epoch_history["val_l_rot"]


def test_bad_input_is_one_clear_error(split, tmp_path):
    with pytest.raises(ValueError, match="batch_size must be at least 2"):
        tiny(batch_size=1)
    run = ag.open_run(tmp_path)
    trained = rotnet.train(split, tiny(epochs=1), run)
    with pytest.raises(ValueError, match="another architecture"):
        rotnet.train(split, tiny(epochs=2, width=8, resume=True), run)
    with pytest.raises(ValueError, match=r"shaped \(N, C, H, W\)"):
        rotnet.score(trained, torch.zeros(3, 16, 16))
