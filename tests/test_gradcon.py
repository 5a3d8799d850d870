"""GradCon: the gradient loss really trains, references are saved, batched scoring is exact."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

import anogan_guide as ag
from anogan_guide import GradConAE, gradcon_scores, gradscore
from anogan_guide import gradcon as gc


def _trained_reference(model: GradConAE, x: torch.Tensor, steps: int = 3) -> dict:
    """A realistic reference: the running mean of a few training steps' gradients."""
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    params = dict(model.named_parameters())
    ref = {n: torch.zeros_like(params[n]) for n in model.gradient_layers()}
    count = torch.zeros((), dtype=torch.long)
    for i in range(steps):
        gc.gradcon_step(model, opt, x[i * 16:(i + 1) * 16], ref, count, beta=0.03)
    return ref


@pytest.fixture(scope="module")
def model_and_data():
    torch.manual_seed(0)
    model = GradConAE(image_size=28, channels=1)
    x = torch.rand(96, 1, 28, 28) ** 3  # dark background, a few bright pixels, like digits
    ref = _trained_reference(model, x)
    return model.eval(), ref, x


def test_parameter_count_and_gradient_layers():
    model = GradConAE(image_size=28, channels=1)
    assert ag.nets.parameter_count(model) == 230_721
    assert model.gradient_layers() == [f"decoder.{i}.weight" for i in (0, 2, 4, 6)]
    for size in (16, 32):
        assert GradConAE(size)(torch.rand(2, 1, size, size)).shape == (2, 1, size, size)


@pytest.mark.parametrize("size", [28, 32])
def test_colour_images_at_cifars_sizes(size):
    """RGB at CIFAR-10's native 32x32 and at 28x28 (GradCon's paper resized CIFAR to it): the
    autoencoder mirrors the input shape, trains, and batched scores equal one-at-a-time ones."""
    torch.manual_seed(0)
    model = GradConAE(image_size=size, channels=3)
    x = torch.rand(48, 3, size, size)
    assert model(x[:2]).shape == (2, 3, size, size)
    params = dict(model.named_parameters())
    assert params[model.gradient_layers()[-1]].shape == (32, 3, 4, 4)  # last layer: 3 channels
    # two more input channels in the first conv and output channels in the last (and 2 biases)
    assert ag.nets.parameter_count(model) == 230_721 + 2 * (2 * 32 * 4 * 4) + 2 == 232_771
    ref = _trained_reference(model, x)
    model.eval()
    one = gradcon_scores(model, ref, x[:20], batch_size=1)
    batched = gradcon_scores(model, ref, x[:20], batch_size=256)
    assert torch.isfinite(one).all()
    assert (batched - one).abs().max() <= 1e-5 * one.abs().max()


def test_batched_scores_equal_one_backward_per_image(model_and_data):
    model, ref, x = model_and_data
    one = gradcon_scores(model, ref, x, batch_size=1)
    batched = gradcon_scores(model, ref, x, batch_size=256)
    odd = gradcon_scores(model, ref, x, batch_size=7)  # a ragged last batch
    assert one.shape == (len(x),)
    # float32 puts both ways about 5e-8 from a float64 computation, so "1e-5 relative" is
    # checked against the scores' scale, and elementwise wherever a score is not ~0
    for other in (batched, odd):
        assert (other - one).abs().max() <= 1e-5 * one.abs().max()
        big = one.abs() > 5e-3
        torch.testing.assert_close(other[big], one[big], rtol=1e-5, atol=0)
        torch.testing.assert_close(other, one, rtol=1e-5, atol=1e-7)


def test_score_terms_match_autograd_and_vmap(model_and_data):
    model, ref, x = model_and_data
    table = gradscore.score_table(model, ref, x[:24], batch_size=256, grad_weight=0.12)
    per_image = gradscore.per_image_gradients(model, list(ref), x[:24])
    for name, r in ref.items():
        g = per_image[name].flatten(1)
        cos = g @ r.flatten() / (g.norm(dim=1) * r.norm())
        torch.testing.assert_close(table[f"cos_{name[:-7]}"], cos, rtol=0, atol=1e-5)
    # the first image by hand, with plain autograd
    xi = x[:1]
    mse = F.mse_loss(model(xi), xi)
    grads = torch.autograd.grad(mse, [dict(model.named_parameters())[n] for n in ref])
    cos = torch.stack([F.cosine_similarity(g.flatten(), r.flatten(), dim=0)
                       for g, r in zip(grads, ref.values(), strict=True)])
    expected = mse.detach() - 0.12 * cos.mean()
    torch.testing.assert_close(table["score"][0], expected, rtol=1e-5, atol=0)
    torch.testing.assert_close(table["l_grad"], -torch.stack(
        [table[f"cos_{n[:-7]}"] for n in ref], 1).mean(1))


def test_reference_order_and_input_kinds(model_and_data):
    model, ref, x = model_and_data
    expected = gradcon_scores(model, ref, x[:20])
    reversed_ref = dict(reversed(list(ref.items())))
    torch.testing.assert_close(gradcon_scores(model, reversed_ref, x[:20]), expected)
    images = ag.ImageSet((x[:20] * 255).round().to(torch.uint8), torch.zeros(20))
    from_set = gradcon_scores(model, ref, images, batch_size=8)
    torch.testing.assert_close(from_set, gradcon_scores(model, ref, images.tensors()))
    loader = images.loader(6)
    torch.testing.assert_close(gradcon_scores(model, ref, loader, batch_size=4), from_set)


def test_bad_reference_is_a_clear_error(model_and_data):
    model, ref, x = model_and_data
    with pytest.raises(ValueError, match="not a ConvTranspose2d weight"):
        gradcon_scores(model, {"encoder.0.weight": torch.zeros(32, 1, 4, 4)}, x[:2])
    with pytest.raises(ValueError, match="reference is empty"):
        gradcon_scores(model, {}, x[:2])
    with pytest.raises(ValueError, match="another architecture"):
        gradcon_scores(model, {"decoder.0.weight": torch.zeros(3, 3)}, x[:2])


def test_gradient_loss_changes_the_weight_update():
    """beta = 0 and beta = 0.03 start identically; from the second step on (the first has no
    reference yet) the updates differ, in the decoder and, through the decoder, the encoder."""
    torch.manual_seed(1)
    x = torch.rand(32, 1, 28, 28) ** 3
    base = GradConAE(28)
    after = {}
    for beta in (0.0, 0.03):
        model = copy.deepcopy(base)
        opt = torch.optim.Adam(model.parameters(), lr=1e-3)
        params = dict(model.named_parameters())
        ref = {n: torch.zeros_like(params[n]) for n in model.gradient_layers()}
        count = torch.zeros((), dtype=torch.long)
        out = gc.gradcon_step(model, opt, x[:16], ref, count, beta)
        assert out["l_grad"] == 0  # no reference at step one
        first = {n: p.detach().clone() for n, p in model.named_parameters()}
        out = gc.gradcon_step(model, opt, x[16:], ref, count, beta)
        assert (out["l_grad"] != 0) == (beta != 0)
        after[beta] = ({n: p.detach().clone() for n, p in model.named_parameters()}, first)
    (p0, f0), (p1, f1) = after[0.0], after[0.03]
    for name in p0:
        torch.testing.assert_close(f0[name], f1[name])  # identical after step one
    for name in ("decoder.0.weight", "decoder.4.weight", "encoder.0.weight"):
        delta = (p1[name] - f1[name]) - (p0[name] - f0[name])
        assert delta.abs().max() > 1e-7, name


def test_reference_is_the_running_mean_of_gradients():
    torch.manual_seed(2)
    model = GradConAE(16)
    opt = torch.optim.SGD(model.parameters(), lr=0.0)  # weights fixed: gradients comparable
    x = torch.rand(24, 1, 16, 16)
    params = dict(model.named_parameters())
    ref = {n: torch.zeros_like(params[n]) for n in model.gradient_layers()}
    count = torch.zeros((), dtype=torch.long)
    weights = [params[n] for n in ref]
    grads = []
    for i in range(3):
        xb = x[i * 8:(i + 1) * 8]
        # W's gradient of the whole training loss: dMSE/dW at step one, + beta * dL_grad/dW after
        mse = F.mse_loss(model(xb), xb)
        g_mse = torch.autograd.grad(mse, weights, create_graph=True)
        loss = mse + 0.03 * gc.gradient_loss(g_mse, [r.clone() for r in ref.values()]) if i else mse
        grads.append(torch.autograd.grad(loss, weights))
        gc.gradcon_step(model, opt, xb, ref, count, beta=0.03)
    assert int(count) == 3
    mse_only = torch.autograd.grad(F.mse_loss(model(x[8:16]), x[8:16]), weights)
    # the gradient term really enters the reference from step two on
    assert any((a - b).abs().max() > 1e-6 for a, b in zip(grads[1], mse_only, strict=True))
    for j, r in enumerate(ref.values()):
        torch.testing.assert_close(r, sum(g[j] for g in grads) / 3)


def test_train_saves_references_and_reloads(tmp_path):
    ag.seed_everything(0)
    split = ag.load_one_class("digits", 0, image_size=16)
    run = ag.open_run(tmp_path)
    cfg = gc.GradConConfig(epochs=2, batch_size=32)
    trained = gc.train(split, cfg, run)
    assert trained.epoch == 2 and len(trained.epoch_history["val_loss"]) == 2
    assert (run.train_img / "gradcon_epoch002.png").is_file()
    last = gc.load(run, which="last")
    for name, r in trained.reference.items():
        torch.testing.assert_close(last.reference[name], r)
        assert r.abs().sum() > 0
    val = split.val.tensors()
    torch.testing.assert_close(gc.score(last, val)["score"], gc.score(trained, val)["score"])
    best = gc.load(run)
    assert best.epoch == trained.best_epoch
    # resume continues from the last checkpoint with its references
    more = gc.train(split, gc.GradConConfig(epochs=3, batch_size=32, resume=True), run)
    assert more.epoch == 3 and len(more.epoch_history["val_loss"]) == 3


def test_a_dead_autoencoder_is_recognised_and_trained_again(tmp_path, monkeypatch):
    """From some initialisations GradCon's autoencoder dies (one reconstruction for every
    input); `follows_input` tells it from a working one on normal images, and training starts
    again from another initialisation, recorded in the checkpoint."""
    ag.seed_everything(0)
    split = ag.load_one_class("digits", 0, image_size=16)
    val = split.val.tensors()
    dead = GradConAE(image_size=16, channels=1)
    with torch.no_grad():  # every ReLU of the encoder silent: the output is sigmoid(bias)
        dead.encoder[0].bias.fill_(-1e3)
    assert not gc.follows_input(dead, val)
    run = ag.open_run(tmp_path)
    first = gc.train(split, gc.GradConConfig(epochs=1, batch_size=32, max_restarts=0), run)
    assert first.restarts == 0 and gc.load(run).restarts == 0
    verdicts = iter([False, True])  # the first training "died", the second trains
    monkeypatch.setattr(gc, "follows_input", lambda model, images: next(verdicts))
    again = gc.train(split, gc.GradConConfig(epochs=1, batch_size=32), run)
    assert again.restarts == 1 and gc.load(run).restarts == 1
    assert again.train_seconds > gc.load(run).train_seconds  # the first training counted too
    w_first, w_again = first.model.encoder[0].weight, again.model.encoder[0].weight
    assert not torch.equal(w_first, w_again)  # another initialisation


def test_a_training_that_has_not_left_the_mean_image_is_abandoned_early(tmp_path, monkeypatch):
    """After CHECK_STEPS steps a training whose reconstructions do not follow the validation
    normals stops there and the next initialisation trains; the last allowed attempt always
    trains to the end, and if it is dead too a warning says so."""
    split = ag.load_one_class("digits", 0, image_size=16)
    monkeypatch.setattr(gc, "CHECK_STEPS", 1)  # check after the first epoch
    epochs_trained = []
    validation_loss = gc.validation_loss
    monkeypatch.setattr(gc, "validation_loss", lambda *a, **k: (
        epochs_trained.append(1), validation_loss(*a, **k))[1])
    verdicts = iter([False, True, True])  # attempt 0 dead at the check; attempt 1 fine twice
    monkeypatch.setattr(gc, "follows_input", lambda model, images: next(verdicts))
    run = ag.open_run(tmp_path / "early")
    trained = gc.train(split, gc.GradConConfig(epochs=3, batch_size=32), run)
    assert trained.restarts == 1 and trained.follows_input is True and trained.epoch == 3
    assert len(epochs_trained) == 1 + 3  # one epoch of the abandoned attempt, three of the next

    monkeypatch.setattr(gc, "follows_input", lambda model, images: False)  # never leaves it
    with pytest.warns(UserWarning, match="same reconstruction after 1 restarts"):
        dead = gc.train(split, gc.GradConConfig(epochs=2, batch_size=32, max_restarts=1),
                        ag.open_run(tmp_path / "dead"))
    assert dead.restarts == 1 and dead.follows_input is False and dead.epoch == 2
    # resumed, the last allowed attempt still trains to the end (it is not checked early)
    epochs_trained.clear()
    with pytest.warns(UserWarning, match="same reconstruction"):
        more = gc.train(split, gc.GradConConfig(epochs=4, batch_size=32, max_restarts=1,
                                                resume=True), ag.open_run(tmp_path / "dead"))
    assert more.restarts == 1 and more.epoch == 4 and len(epochs_trained) == 2  # epochs 3, 4
