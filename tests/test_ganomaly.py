"""GANomaly: shapes, published losses, D re-initialisation, resume, eval-mode scoring, training."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch

import anogan_guide as ag
from anogan_guide import ganomaly as gm
from anogan_guide.nets import GanomalyDiscriminator, GanomalyGenerator, eval_mode

TINY = dict(batch_size=32, width=8, latent_dim=16, lr=1e-3, min_steps_per_epoch=0)


@pytest.fixture(scope="module")
def split():
    return ag.load_one_class("digits", 0, image_size=16)


def tiny_config(**kwargs) -> gm.GanomalyConfig:
    return gm.GanomalyConfig(**{"epochs": 1, **TINY, **kwargs})


def state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_same_state(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("size,channels", [(16, 1), (32, 3), (64, 1)])
def test_shapes(size, channels):
    g = GanomalyGenerator(size, channels, latent_dim=20, width=8)
    d = GanomalyDiscriminator(size, channels, width=8)
    x = torch.rand(3, channels, size, size) * 2 - 1
    x_hat, z, z_hat = g(x)
    assert x_hat.shape == x.shape and z.shape == z_hat.shape == (3, 20)
    assert x_hat.abs().max() <= 1  # tanh output
    assert d(x).shape == (3,)
    blocks = {16: 2, 32: 3, 64: 4}[size]
    assert d.features(x).shape == (3, 8 * 2 ** (blocks - 1), 4, 4)  # D's last feature map
    # the two encoders have separate weights
    assert g.encoder1.head.weight.data_ptr() != g.encoder2.head.weight.data_ptr()


def test_published_width_and_bad_size():
    g = GanomalyGenerator(32, 1)
    d = GanomalyDiscriminator(32, 1)
    assert d.features(torch.zeros(2, 1, 32, 32)).shape == (2, 256, 4, 4)
    assert g(torch.zeros(2, 1, 32, 32))[1].shape == (2, 100)
    with pytest.raises(ValueError, match="power-of-two"):
        GanomalyGenerator(28, 1)


def test_losses_as_published():
    torch.manual_seed(0)
    x, x_hat = torch.randn(4, 1, 8, 8), torch.randn(4, 1, 8, 8)
    z, z_hat = torch.randn(4, 10), torch.randn(4, 10)
    fr, ff = torch.randn(4, 6, 2, 2), torch.randn(4, 6, 2, 2)
    terms = gm.generator_losses(x, x_hat, z, z_hat, fr, ff)
    assert torch.allclose(terms["l_con"].mean(), torch.nn.functional.l1_loss(x_hat, x))
    assert torch.allclose(terms["l_enc"].mean(), torch.nn.functional.mse_loss(z_hat, z))
    assert torch.allclose(terms["l_adv"].mean(), torch.nn.functional.mse_loss(ff, fr))
    assert torch.allclose(terms["l_enc"][1], ((z[1] - z_hat[1]) ** 2).mean())
    logits = torch.tensor([20.0, -20.0])
    assert gm.discriminator_loss(logits[:1], logits[1:]) < 1e-5  # a collapsed D
    assert gm.discriminator_loss(torch.zeros(3), torch.zeros(3)) == pytest.approx(0.6931, 1e-4)


def test_config_errors():
    with pytest.raises(ValueError, match="validation criterion"):
        gm.GanomalyConfig(select="test_auc")
    with pytest.raises(ValueError, match="batch_size"):
        gm.GanomalyConfig(batch_size=1)


def test_reinit_discriminator_resets_weights_and_adam():
    torch.manual_seed(0)
    d = GanomalyDiscriminator(16, 1, width=8)
    opt = torch.optim.Adam(d.parameters())
    with torch.no_grad():
        for p in d.parameters():
            p.fill_(0.5)
    d(torch.zeros(2, 1, 16, 16)).sum().backward()
    opt.step()
    assert opt.state
    gm.reinit_discriminator(d, opt)
    assert not opt.state
    assert d.encoder.head.weight.std().item() == pytest.approx(0.02, rel=0.3)


def test_discriminator_reinitialised_when_its_loss_collapses(split, tmp_path, monkeypatch):
    steps = len(split.train) // TINY["batch_size"]  # the last, partial batch is dropped
    # every loss counts as collapsed: one re-initialisation per step
    monkeypatch.setattr(gm, "D_COLLAPSE", float("inf"))
    calls = []
    original = gm.reinit_discriminator
    monkeypatch.setattr(gm, "reinit_discriminator", lambda d, o: (calls.append(1), original(d, o)))
    trained = gm.train(split, tiny_config(epochs=2), ag.open_run(tmp_path / "a"))
    assert len(calls) == 2 * steps
    assert trained.epoch_history["d_reinits"] == [steps, 2 * steps]
    # and never when it does not collapse
    monkeypatch.setattr(gm, "D_COLLAPSE", 0.0)
    calls.clear()
    trained = gm.train(split, tiny_config(epochs=2), ag.open_run(tmp_path / "b"))
    assert not calls and trained.epoch_history["d_reinits"] == [0, 0]


def test_resume_after_interruption_gives_identical_weights(split, train_interrupted_and_straight):
    straight, interrupted, resumed = train_interrupted_and_straight(
        gm, split, tiny_config(epochs=3))
    a, b = gm.load(straight, which="last"), gm.load(interrupted, which="last")
    assert a.epoch == b.epoch == 3
    assert_same_state(state(a.generator), state(b.generator))
    assert_same_state(state(a.discriminator), state(b.discriminator))
    assert resumed.best_epoch == gm.load(straight).best_epoch
    assert resumed.epoch_history["val_loss"] == a.epoch_history["val_loss"]


def test_resume_refuses_another_architecture(split, tmp_path):
    run = ag.open_run(tmp_path)
    gm.train(split, tiny_config(), run)
    with pytest.raises(ValueError, match="another architecture"):
        gm.train(split, tiny_config(epochs=2, width=16, resume=True), run)


def test_scoring_in_eval_mode(split, tmp_path):
    trained = gm.train(split, tiny_config(epochs=2), ag.open_run(tmp_path))
    trained.generator.train()
    trained.discriminator.train()
    images = split.val.in_range(-1, 1).tensors()[:12]
    before = state(trained.generator)
    table, z = gm.score_with_latent(trained, images, batch_size=5)
    assert set(table) == {"l_enc", "l_con", "l_adv", "score"}
    assert all(v.shape == (12,) for v in table.values()) and z.shape == (12, 16)
    assert torch.equal(table["score"], table["l_enc"])
    # eval mode: each image's score is independent of its batch, no BatchNorm statistics move,
    # and the caller's modes come back
    one = torch.cat([gm.score(trained, images[i:i + 1])["score"] for i in range(12)])
    assert torch.allclose(one, table["score"], rtol=1e-5, atol=1e-8)
    assert_same_state(before, state(trained.generator))
    assert trained.generator.training and trained.discriminator.training
    # in train mode the scores would depend on the batch (so the check above can fail)
    with torch.no_grad():
        x_hat, zz, z_hat = copy.deepcopy(trained.generator)(images)
    assert not torch.allclose(((zz - z_hat) ** 2).mean(1), table["score"], rtol=1e-3)
    # the ImageSet path converts to [-1, 1] itself
    assert torch.allclose(gm.score(trained, split.val)["score"][:12], table["score"], rtol=1e-5)


def test_eval_mode_restores_each_module_also_after_an_error():
    g, d = GanomalyGenerator(16, 1, latent_dim=8, width=8), GanomalyDiscriminator(16, 1, 8)
    d.eval()
    d.encoder.train()  # a mixed module: train() restores the top-level mode to every child
    with eval_mode(g, d):
        assert not g.training and not d.training and not d.encoder.training
    assert g.training and not d.training
    with pytest.raises(RuntimeError, match="inside"), eval_mode(g):
        assert not g.training
        raise RuntimeError("inside")
    assert g.training


def test_tiny_training_decreases_loss_and_selects_on_validation(split, tmp_path):
    run = ag.open_run(tmp_path)
    trained = gm.train(split, tiny_config(epochs=4), run)
    assert trained.config.select == "l_enc_rel"
    h = trained.epoch_history
    assert h["l_con"][-1] < h["l_con"][0]
    assert h["g_loss"][-1] < h["g_loss"][0]
    assert len(list(run.train_img.glob("ganomaly_epoch*.png"))) == 4
    best = min(range(4), key=lambda i: h["val_loss"][i]) + 1
    assert trained.best_epoch == best == trained.epoch
    assert h["val_loss"] == pytest.approx(h["val_l_enc_rel"])
    # a fresh load gives the same models and scores
    loaded = gm.load(run)
    assert not loaded.generator.training and loaded.epoch == best
    assert torch.equal(gm.score(loaded, split.val)["score"], gm.score(trained, split.val)["score"])


def test_training_never_reads_the_test_set(split, tmp_path):
    blind = dataclasses.replace(split, test=None, test_classes=None)
    gm.train(blind, tiny_config(select="l_enc_rel"), ag.open_run(tmp_path))


def test_reconstructions_saved(split, tmp_path):
    run = ag.open_run(tmp_path)
    trained = gm.train(split, tiny_config(), run)
    images = split.val.in_range(-1, 1).tensors()[:6]
    grid = gm.save_reconstructions(trained, images, run.test_imgs / "r.png", nrow=3)
    assert grid.shape == (12, 1, 16, 16) and (run.test_imgs / "r.png").is_file()
    assert torch.equal(grid[:3], images[:3])


def test_relative_encoding_criterion_is_scale_free_and_rejects_collapse():
    torch.manual_seed(0)
    z = torch.randn(50, 8)
    z_hat = z + 0.1 * torch.randn(50, 8)
    table = {"l_enc": ((z - z_hat) ** 2).mean(1), "l_con": torch.ones(50)}
    rel = gm.validation_criterion(table, z, "l_enc_rel")
    assert rel == pytest.approx(0.01, rel=0.3)
    # shrinking the latent space lowers plain l_enc but not the relative criterion
    small = {"l_enc": ((z - z_hat) ** 2 / 100).mean(1), "l_con": torch.ones(50)}
    assert gm.validation_criterion(small, z / 10, "l_enc") < gm.validation_criterion(
        table, z, "l_enc")
    assert gm.validation_criterion(small, z / 10, "l_enc_rel") == pytest.approx(rel)
    # a generator whose second encoder ignores its input (constant z_hat) scores >= 1
    const = {"l_enc": ((z - z.mean(0)) ** 2).mean(1), "l_con": torch.ones(50)}
    assert gm.validation_criterion(const, z, "l_enc_rel") == pytest.approx(1.0)
    assert gm.validation_criterion(table, z, "last") is None
    assert gm.validation_criterion(table, z, "l_con") == 1.0


def test_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(split, tmp_path, monkeypatch):
    run = ag.open_run(tmp_path)
    gm.train(split, tiny_config(), run)
    good = state(gm.load(run, which="last").generator)
    original = gm.generator_losses

    def broken(*args):
        terms = original(*args)
        return {**terms, "l_con": terms["l_con"] * float("nan")}

    monkeypatch.setattr(gm, "generator_losses", broken)
    with pytest.raises(FloatingPointError, match="became nan"):
        gm.train(split, tiny_config(epochs=2, resume=True), run)
    kept = gm.load(run, which="last")
    assert kept.epoch == 1
    assert_same_state(good, state(kept.generator))


def test_small_sets_are_cycled_to_min_steps_per_epoch(split, tmp_path):
    per_pass = len(split.train) // TINY["batch_size"]  # 3 batches of 32 from 112 digits
    trained = gm.train(split, tiny_config(min_steps_per_epoch=2 * per_pass + 1),
                       ag.open_run(tmp_path))
    assert len(trained.history["l_con"]) == 3 * per_pass  # whole passes, at least the minimum


# ---------------------------------------------------------------------------------------------
# The rotation head (SS-GAN style): trained with w_rot > 0, absent (the published model) at 0


def test_rotation_head_trains_and_scores(split, tmp_path):
    from anogan_guide import rotation

    run = ag.open_run(tmp_path)
    config = tiny_config(epochs=3, w_rot=1.0)
    g, d = gm.build_models(16, 1, config)
    head_before = d.rotation.weight.detach().clone()
    trained = gm.train(split, config, run)
    assert not torch.equal(trained.discriminator.rotation.weight, head_before)
    d_rot = trained.history["d_rot"]
    assert sum(d_rot[-5:]) / 5 < sum(d_rot[:5]) / 5  # the head learns the turns of normals
    assert trained.epoch_history["val_l_rot"][-1] < trained.epoch_history["val_l_rot"][0]
    table = gm.score(trained, split.test)
    assert {"l_enc", "l_con", "l_adv", "l_rot", "acc_rot"} <= set(table)
    assert torch.equal(table["score"], table["l_enc"])  # one score term: the published score
    # l_rot: the head's summed rotation loss, mean of the image and its mirror image, eval mode
    x = split.test.in_range(-1, 1).tensors()[:5]
    d = trained.discriminator.eval()
    with torch.no_grad():
        own, mirror = (rotation.rotation_terms(d.rotation_logits(rotation.all_rotations(v)[0]),
                                               5)["l_rot"] for v in (x, x.flip(-1)))
    torch.testing.assert_close(table["l_rot"][:5], 0.5 * (own + mirror), rtol=1e-4, atol=1e-5)
    assert ((0 <= table["acc_rot"]) & (table["acc_rot"] <= 4)).all()
    assert torch.equal(gm.score(trained, x, batch_size=2)["l_rot"], gm.score(trained, x)["l_rot"])
    reloaded = gm.load(run)
    assert reloaded.discriminator.has_rotation_head
    assert torch.equal(gm.score(reloaded, split.test)["l_rot"], table["l_rot"])


def test_without_the_head_checkpoints_are_as_before(split, tmp_path):
    run = ag.open_run(tmp_path)
    trained = gm.train(split, tiny_config(), run)
    assert not trained.discriminator.has_rotation_head
    assert "rotation.weight" not in trained.discriminator.state_dict()
    # the keys added with the head are not recorded at their defaults: an older checkpoint,
    # which lacks them, is the same file, and resumes and reloads
    saved = ag.runs.read_checkpoint(run.checkpoint("ganomaly", "last"))
    assert not set(saved["config"]) & set(gm.GanomalyConfig.LATER_KEYS)
    assert saved["extra"] == {}
    resumed = gm.train(split, tiny_config(epochs=2, resume=True), run)
    assert len(resumed.epoch_history["val_loss"]) == 2  # epoch 1 reloaded, epoch 2 trained
    table = gm.score(gm.load(run, which="last"), split.val)
    assert "l_rot" not in table and torch.equal(table["score"], table["l_enc"])
    with pytest.raises(ValueError, match="no rotation head"):
        trained.discriminator.rotation_logits(torch.zeros(2, 1, 16, 16))


def test_generator_rotation_term_changes_the_generator(split, tmp_path):
    a = gm.train(split, tiny_config(w_rot=1.0), ag.open_run(tmp_path / "a"))
    b = gm.train(split, tiny_config(w_rot=1.0, w_rot_g=0.5), ag.open_run(tmp_path / "b"))
    assert "g_rot" in b.history and "g_rot" not in a.history
    sa, sb = state(a.generator), state(b.generator)
    assert any(not torch.equal(sa[k], sb[k]) for k in sa)


def test_combined_score_is_fitted_on_validation_and_saved(split, tmp_path):
    from anogan_guide.evaluate import Standardizer

    run = ag.open_run(tmp_path)
    config = tiny_config(epochs=2, w_rot=1.0, score_terms="l_enc,l_rot", weighting="equal")
    trained = gm.train(split, config, run)
    assert trained.combination.terms == ("l_enc", "l_rot")
    val = gm.score_with_latent(trained, split.val, combination=None)[0]
    for term, scaler in zip(trained.combination.terms, trained.combination.scalers, strict=True):
        fitted = Standardizer.fit(val[term])
        assert scaler.mean == pytest.approx(fitted.mean) and scaler.std == pytest.approx(fitted.std)
    table = gm.score(trained, split.test)
    z = trained.combination.standardized(table)
    torch.testing.assert_close(table["score"], 0.5 * (z["l_enc"] + z["l_rot"]))
    reloaded = gm.load(run)
    assert reloaded.combination == trained.combination
    assert torch.equal(gm.score(reloaded, split.test)["score"], table["score"])


def test_rotation_config_errors():
    with pytest.raises(ValueError, match="w_rot=0 trains no head"):
        tiny_config(score_terms="l_enc,l_rot", score_weights="1,1")
    with pytest.raises(ValueError, match="w_rot_g needs the head"):
        tiny_config(w_rot_g=0.1)
    with pytest.raises(ValueError, match="score_terms"):
        tiny_config(score_terms="l_grad")
    with pytest.raises(ValueError, match="one number per score term"):
        tiny_config(w_rot=1.0, score_terms="l_enc,l_rot")


def test_resume_with_the_rotation_head_gives_identical_weights(split,
                                                                train_interrupted_and_straight):
    config = tiny_config(epochs=3, w_rot=1.0, w_rot_g=0.2, score_terms="l_enc,l_rot",
                         weighting="equal")
    straight, interrupted, resumed = train_interrupted_and_straight(gm, split, config)
    a, b = gm.load(straight, which="last"), gm.load(interrupted, which="last")
    assert_same_state(state(a.generator), state(b.generator))
    assert_same_state(state(a.discriminator), state(b.discriminator))  # the head, the flips
    assert a.combination == b.combination
    assert resumed.epoch_history["val_l_rot"] == a.epoch_history["val_l_rot"]
