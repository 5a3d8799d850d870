"""AnoGAN with the SS-GAN rotation head on its DCGAN discriminator: the head trains, resumes
exactly, is absent (state dict, checkpoint, scores) without w_rot, joins the score table, and the
score rule (`latentscore.ScoreRule`) combines it; the detector scores a head run as its notebook
did. Tiny: digits at 16x16, a few steps."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

import anogan_guide as ag
from anogan_guide import anogan, evaluate, fanogan, latent, rotation, rothead, sources, sweep
from anogan_guide.detector import Detector
from anogan_guide.evaluate import Standardizer
from anogan_guide.latentscore import MappingImages, ScoreRule, entry_tables

# the published DCGAN discriminator's state dict at 16x16 (two stride-2 blocks), as checkpoints
# made before the head existed hold it
PUBLISHED_KEYS = ["encoder.features.0.weight", "encoder.features.2.weight",
                  "encoder.features.3.weight", "encoder.features.3.bias",
                  "encoder.features.3.running_mean", "encoder.features.3.running_var",
                  "encoder.features.3.num_batches_tracked", "encoder.head.weight"]


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def split():
    return ag.load_one_class("digits", 0, image_size=16, seed=0)


def _config(**kw) -> ag.AnoganConfig:
    base = dict(epochs=2, batch_size=32, val_images=8, val_iterations=0, seed=0)
    return ag.AnoganConfig(**(base | kw))


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def head_run(split, tmp_path_factory):
    """A GAN trained with the head (w_rot 1, w_rot_g 0.2) for five short epochs, reloaded."""
    run = ag.open_run(tmp_path_factory.mktemp("head"))
    trained = anogan.train(split, _config(epochs=5, w_rot=1.0, w_rot_g=0.2, lr=1e-3), run, "cpu")
    return run, trained, anogan.load(run)


# ---------------------------------------------------------------------------------------------
# The network and the checkpoints


def test_without_the_head_the_discriminator_is_the_published_one(split, tmp_path):
    torch.manual_seed(0)
    plain = ag.Discriminator(16, 1)
    torch.manual_seed(0)
    headed = ag.Discriminator(16, 1, rotation_head=True)
    assert list(plain.state_dict()) == PUBLISHED_KEYS and not plain.has_rotation_head
    assert list(headed.state_dict()) == PUBLISHED_KEYS + ["rotation.weight", "rotation.bias"]
    assert headed.rotation_logits(torch.zeros(3, 1, 16, 16)).shape == (3, 4)
    with pytest.raises(ValueError, match="no rotation head; train with w_rot > 0"):
        plain.rotation_logits(torch.zeros(2, 1, 16, 16))
    # GANomaly's discriminator is the same class (its head is inherited, not a copy)
    assert isinstance(ag.GanomalyDiscriminator(16, 1, rotation_head=True).rotation, torch.nn.Conv2d)
    # a run without the head writes the checkpoint a run made before the head existed wrote: no
    # new config key, the published state dict, the old loss names; it resumes and reloads
    run = ag.open_run(tmp_path)
    trained = anogan.train(split, _config(epochs=1), run, "cpu")
    saved = ag.runs.read_checkpoint(run.checkpoint("anogan", "last"))
    assert not set(saved["config"]) & set(ag.AnoganConfig.LATER_KEYS)
    assert list(saved["models"]["discriminator"]) == PUBLISHED_KEYS
    assert set(trained.history) == {"loss_d", "loss_g", "d_real", "d_fake"}
    assert "val_l_rot" not in trained.epoch_history
    resumed = anogan.train(split, _config(epochs=2, resume=True), run, "cpu")
    assert resumed.epoch == 2 and not anogan.load(run).discriminator.has_rotation_head


def test_without_the_head_the_scores_are_the_mapping_scores(split, tmp_path):
    gan = anogan.train(split, _config(epochs=1), ag.open_run(tmp_path), "cpu")
    x = split.val.in_range(-1, 1).tensors()[:12]
    kw = dict(iterations=4, lr=0.01, lam=0.1, batch_size=5, seed=0, progress_bar=False)
    result = latent.map_images(gan, x, **kw)
    table = result.table()
    assert list(table) == ["residual", "discrimination", "score"]  # what scores/*.npz held
    direct = latent.map_latent(gan.generator, gan.discriminator, x, **kw)
    assert torch.equal(table["score"], direct.score)
    rule = ScoreRule.fit(table)  # the default: the published score, recorded as nothing
    assert rule.params() == {} and ScoreRule.from_params({}) == rule
    assert list(result.table(rule)) == list(table)
    assert all(torch.equal(result.table(rule)[k], table[k]) for k in table)
    # a rule of its parts works without the head too (the mapping score is the term "anogan")
    parts = ScoreRule.fit(table, "anogan,residual", "1,1")
    z = parts.combination.standardized({**table, "anogan": table["score"]})
    torch.testing.assert_close(result.table(parts)["score"], z["anogan"] + z["residual"])


# ---------------------------------------------------------------------------------------------
# Training with the head


def test_the_head_learns_the_turns_of_normal_images(split, head_run):
    run, trained, reloaded = head_run
    torch.manual_seed(0)
    untrained = ag.Discriminator(16, 1, rotation_head=True)
    assert not torch.equal(trained.discriminator.rotation.weight, untrained.rotation.weight)
    d_rot, acc = trained.history["d_rot"], trained.history["acc_rot"]
    assert len(d_rot) == len(trained.history["loss_d"]) and "g_rot" in trained.history
    assert np.mean(d_rot[-4:]) < np.mean(d_rot[:4])  # the head learns the turns of normals
    assert np.mean(acc[-4:]) > np.mean(acc[:4])
    val_l_rot = trained.epoch_history["val_l_rot"]
    assert len(val_l_rot) == 5 and val_l_rot[-1] < val_l_rot[0]
    # the recorded config builds the head again on load
    assert reloaded.discriminator.has_rotation_head and reloaded.config.w_rot == 1.0
    assert _same(_state(reloaded.discriminator), _state(trained.discriminator))
    saved = ag.runs.read_checkpoint(run.checkpoint("anogan", "last"))["config"]
    assert saved["w_rot"] == 1.0 and saved["w_rot_g"] == 0.2 and "rot_hflip" not in saved


def test_the_generator_term_changes_the_generator(split, tmp_path):
    a = anogan.train(split, _config(epochs=1, w_rot=1.0), ag.open_run(tmp_path / "a"), "cpu")
    b = anogan.train(split, _config(epochs=1, w_rot=1.0, w_rot_g=0.5), ag.open_run(tmp_path / "b"),
                     "cpu")
    assert "g_rot" in b.history and "g_rot" not in a.history
    assert not _same(_state(a.generator), _state(b.generator))
    # the mirroring is drawn from its own seeded generator: another rot_hflip, another head
    c = anogan.train(split, _config(epochs=1, w_rot=1.0, rot_hflip=False),
                     ag.open_run(tmp_path / "c"), "cpu")
    assert not torch.equal(a.discriminator.rotation.weight, c.discriminator.rotation.weight)


def test_resume_with_the_head_gives_identical_weights(split, train_interrupted_and_straight):
    config = _config(epochs=3, w_rot=1.0, w_rot_g=0.2, val_iterations=2)
    straight, interrupted, resumed = train_interrupted_and_straight(anogan, split, config)
    a, b = anogan.load(straight, which="last"), anogan.load(interrupted, which="last")
    assert _same(_state(a.generator), _state(b.generator))
    assert _same(_state(a.discriminator), _state(b.discriminator))  # the head, the flips
    assert resumed.history == a.history
    assert resumed.epoch_history["val_l_rot"] == a.epoch_history["val_l_rot"]


def test_config_errors():
    with pytest.raises(ValueError, match="w_rot_g needs the head"):
        _config(w_rot_g=0.1)
    with pytest.raises(ValueError, match="rotation losses are >= 0"):
        _config(w_rot=-1.0)
    with pytest.raises(ValueError, match="gan_loss bce only; pass -p gan_loss bce") as err:
        _config(w_rot=1.0, gan_loss="wgan-gp")
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# Scoring with the head, and the score rule


def test_the_head_joins_the_score_table(split, head_run):
    _, _, gan = head_run
    x = split.test.in_range(-1, 1).tensors()[:9]
    kw = dict(iterations=3, batch_size=4, seed=0, progress_bar=False)
    result = latent.map_images(gan, x, **kw)
    table = result.table()
    assert list(table) == ["residual", "discrimination", "anogan", "l_rot", "acc_rot", "score"]
    assert torch.equal(table["score"], table["anogan"])  # no rule: the published score
    # l_rot: the head's summed rotation loss, mean of the image and its mirror image, eval mode
    d = gan.discriminator
    assert not d.training
    with torch.no_grad():
        own, mirror = (rotation.rotation_terms(d.rotation_logits(rotation.all_rotations(v)[0]),
                                               9)["l_rot"] for v in (x, x.flip(-1)))
    torch.testing.assert_close(table["l_rot"], 0.5 * (own + mirror), rtol=1e-4, atol=1e-5)
    assert ((0 <= table["acc_rot"]) & (table["acc_rot"] <= 4)).all()
    assert torch.equal(latent.head_terms(gan, x, 2)["l_rot"], table["l_rot"])
    part = result.subset(torch.tensor([4, 1]))
    assert torch.equal(part.table()["l_rot"], table["l_rot"][[4, 1]])
    # f-AnoGAN's tables come from the same GAN: they hold the head's terms too
    assert rothead.eval_terms(d, x, flips=False)["l_rot"].shape == (9,)


def test_score_terms_combine_on_validation_normals(split, head_run):
    _, _, gan = head_run
    kw = dict(iterations=3, batch_size=64, seed=0, progress_bar=False)
    val = latent.map_images(gan, split.val, **kw)
    test = latent.map_images(gan, split.test.in_range(-1, 1).tensors()[:40], **kw)
    rule = ScoreRule.fit(val.table(), "anogan,l_rot", "1,2")
    for term, scaler in zip(rule.terms, rule.combination.scalers, strict=True):
        fitted = Standardizer.fit(val.table()[term])
        assert scaler.mean == pytest.approx(fitted.mean) and scaler.std == pytest.approx(fitted.std)
    table = test.table(rule)
    z = rule.combination.standardized(test.table())
    torch.testing.assert_close(table["score"], z["anogan"] + 2 * z["l_rot"])
    assert torch.equal(table["anogan"], test.score)  # the mapping score stays a term
    # recorded in metrics.json and read back: the same rule, the same scores, bit for bit
    again = ScoreRule.from_params(json.loads(json.dumps(rule.params())))
    assert again == rule and torch.equal(test.table(again)["score"], table["score"])
    assert rule.params()["combination"] == "1.000*z(anogan) + 2.000*z(l_rot)"
    alone = ScoreRule.fit(val.table(), "l_rot")
    assert torch.equal(test.table(alone)["score"], test.table()["l_rot"])
    # `-p score_weights 1` reaches the notebook as a YAML number, not a string: the same rule
    assert ScoreRule.fit(val.table(), "l_rot", 1).terms == alone.terms
    assert ScoreRule.fit(val.table(), "anogan,l_rot", "1,2") == rule


def test_bad_score_rules_name_the_fix(split, tmp_path):
    gan = anogan.train(split, _config(epochs=1), ag.open_run(tmp_path), "cpu")
    table = latent.map_images(gan, split.val.in_range(-1, 1).tensors()[:8], iterations=1,
                              progress_bar=False).table()
    for terms, weights, message in (
            ("anogan,l_rot", "1,2", "discriminator has no head; train it with -p w_rot 1"),
            ("l_rot", "1", "discriminator has no head; train it with -p w_rot 1"),
            ("anogan,l_enc", "1,1", "score_terms='anogan,l_enc': use a comma-separated list"),
            ("anogan,residual", "1", "one number per score term")):
        with pytest.raises(ValueError, match=message) as err:
            ScoreRule.fit(table, terms, weights)
        assert "\n" not in str(err.value)


# ---------------------------------------------------------------------------------------------
# The detector scores a head run as notebook 02 did


@pytest.fixture(scope="module")
def head_demo(split, head_run, tmp_path_factory):
    """The head run scored as 02_latent_mapping scores it, with the rule anogan,l_rot (1, 2), for
    the search (a test sample) and f-AnoGAN's encoder; the test images as PNG files."""
    run, _, gan = head_run
    loaded = ag.load_split(run, dataset="digits", normal_class=0, image_size=16)
    idx = ag.subsample_test(loaded, 60, seed=0)
    x = {k: s.in_range(-1, 1).tensors() for k, s in (("val", loaded.val), ("test", loaded.test),
                                                       ("dev", loaded.dev))}
    mapping = dict(iterations=3, lr=0.01, lam=0.1, batch_size=32, seed=0, progress_bar=False)
    params = {"iterations": 3, "lr": 0.01, "lam": 0.1, "batch_size": 32, "gan_loss": "bce"}
    encoder = fanogan.train_encoder(loaded, gan, ag.FanoganConfig(epochs=1), run, "cpu")
    for name, model, kind, test_idx in (("anogan", gan, "iterative", idx),
                                        ("fanogan", encoder, "encoder", None)):
        index = torch.arange(len(loaded.test)) if test_idx is None else test_idx
        maps = [latent.map_images(model, x[k][i], mapping=kind, **mapping)
                for k, i in (("val", slice(None)), ("test", index), ("dev", slice(None)))]
        rule = ScoreRule.fit(maps[0].table(), "anogan,l_rot", "1,2")
        val, test, dev = (m.table(rule) for m in maps)
        evaluate.finish_method(run, name, loaded, val, test, dev=dev, test_indices=index,
                               train_seconds=0.0, score_seconds=1.0,
                               params=dict(params, mapping=kind) | rule.params())
    _, _, test_images, _, _, _, _ = sources.digits()
    files = tmp_path_factory.mktemp("files")
    for i, image in enumerate(test_images):
        Image.fromarray(image[0].numpy()).save(files / f"{i:04d}.png")
    return run, files


@pytest.mark.parametrize("method", ("anogan", "fanogan"))
def test_the_detector_scores_a_head_run_as_the_notebook(head_demo, tmp_path, method):
    run, files = head_demo
    saved = evaluate.load_scores(run, method)
    assert {"l_rot", "acc_rot", "anogan"} <= set(saved.test)
    assert not np.array_equal(saved.test["score"], saved.test["anogan"])  # the rule's score
    paths = [files / f"{i:04d}.png" for i in saved.test_indices]
    detector = Detector.load(run.root, method, device="cpu")
    assert np.array_equal(detector.score(paths).score, saved.test["score"])
    detector.export(tmp_path / "head.pt")  # the rule travels in the method's parameters
    exported = Detector.load(tmp_path / "head.pt", device="cpu")
    assert np.array_equal(exported.score(paths).score, saved.test["score"])


# ---------------------------------------------------------------------------------------------
# l_rot alone needs no search: its entry covers every test image


def _entry(gan, images, terms, weights="1"):
    mapping = dict(iterations=2, lr=0.01, lam=0.1, batch_size=32, seed=0, progress_bar=False)
    val_map = latent.map_images(gan, images.val_sample, **mapping)
    test_map = latent.map_images(gan, images.test_sample, **mapping)
    rule = ScoreRule.fit(val_map.table(), terms, weights)
    return rule, test_map, entry_tables(rule, gan, images, val_map, test_map, 1.0, **mapping)


def test_a_head_score_covers_every_image_and_a_mapping_score_the_sample(split, head_run):
    _, _, gan = head_run
    images = MappingImages.of(split, 40, seed=0)
    assert len(images.test_indices) == 40 and len(images.dev_sample) == 40
    rule, test_map, head = _entry(gan, images, "l_rot")
    assert not rule.needs_mapping
    assert torch.equal(head.test_indices, torch.arange(len(split.test)))
    assert len(head.dev["score"]) == len(split.dev) and len(head.val["score"]) == len(split.val)
    # the head's score of an image is the one the search's table holds for it: no mapping enters
    assert torch.allclose(head.test["score"][images.test_indices], test_map.table()["l_rot"])
    rule, test_map, both = _entry(gan, images, "anogan,l_rot", "1,2")
    assert rule.needs_mapping and torch.equal(both.test_indices, images.test_indices)
    assert len(both.dev["score"]) == 40 and both.seconds > 1.0
    assert torch.equal(both.test["score"], test_map.table(rule)["score"])
    with pytest.raises(ValueError, match="reads the latent mapping; map the images first"):
        rule.on_head(head.test)


def test_the_detector_scores_a_head_score_without_the_search(split, head_run, tmp_path):
    run_dir, _, gan = head_run
    run = ag.open_run(tmp_path / "copy")
    shutil.copytree(run_dir.model_saves, run.model_saves, dirs_exist_ok=True)
    loaded = ag.load_split(run, dataset="digits", normal_class=0, image_size=16)
    _, _, head = _entry(gan, MappingImages.of(loaded, 40, seed=0), "l_rot")
    evaluate.finish_method(run, "anogan", loaded, head.val, head.test, dev=head.dev,
                           test_indices=head.test_indices, train_seconds=0.0, score_seconds=1.0,
                           params={"iterations": 2, "lr": 0.01, "lam": 0.1, "batch_size": 32,
                                   "gan_loss": "bce", "mapping": "iterative", "score_terms":
                                   "l_rot"})
    _, _, test_images, _, _, _, _ = sources.digits()
    paths = []
    for i, image in enumerate(test_images):
        paths.append(tmp_path / f"{i:04d}.png")
        Image.fromarray(image[0].numpy()).save(paths[-1])
    scored = Detector.load(run.root, "anogan", device="cpu").score(paths)
    assert np.allclose(scored.score, head.test["score"].numpy(), rtol=1e-5)


def test_with_l_rot_alone_the_search_maps_only_a_small_sample_for_the_figures(split, head_run):
    _, _, gan = head_run
    mapped = MappingImages.for_score(split, "anogan,l_rot", 100, figure_images=20, seed=0)
    assert mapped.val_indices is None and len(mapped.val_sample) == len(split.val)
    assert torch.equal(mapped.test_indices, MappingImages.of(split, 100, seed=0).test_indices)
    head = MappingImages.for_score(split, "l_rot", 100, figure_images=20, seed=0)
    assert len(head.test_sample) == 20 and len(head.val_sample) == min(20, len(split.val))
    assert torch.equal(head.val, mapped.val)  # the entry's validation scores still cover all
    assert len(MappingImages.for_score(split, "l_rot", 0, figure_images=0).test_sample) == len(
        split.test)  # 0: the search's samples as max_test_images says
    # the entry is the same whichever sample the search mapped: every image, by the head
    small = _entry(gan, head, "l_rot")[2]
    large = _entry(gan, MappingImages.of(split, 100, seed=0), "l_rot")[2]
    for part in ("val", "test", "dev"):
        assert torch.equal(getattr(small, part)["score"], getattr(large, part)["score"])
    assert "figure_images" in sweep.RECORD_IGNORES  # no finished run is stale for it


def test_the_f_anogan_entries_reuse_the_heads_terms_and_map_the_figures_sample(split, head_run):
    """Notebook 02's f-AnoGAN cell with l_rot alone: the encoder maps the search's sample (not
    every image), and its entries take the head's terms of the search's entry unchanged."""
    _, _, gan = head_run
    mapped = MappingImages.for_score(split, "anogan,l_rot", 100, figure_images=20, seed=0)
    assert len(mapped.for_encoder().test_sample) == len(split.test)  # a mapping score: all
    head = MappingImages.for_score(split, "l_rot", 100, figure_images=20, seed=0)
    assert head.for_encoder() is head and len(head.for_encoder().test_sample) == 20
    rule, test_map, first = _entry(gan, head, "l_rot")
    assert first.head is not None and len(first.head) == 3
    again = entry_tables(rule, gan, head.for_encoder(), test_map, test_map, 0.0, same_head=first,
                         batch_size=32)
    fresh = _entry(gan, head.whole(), "l_rot")[2]
    for part in ("val", "test", "dev"):
        for k in ("score", "l_rot"):
            assert torch.equal(getattr(again, part)[k], getattr(first, part)[k])
            assert torch.equal(getattr(again, part)[k], getattr(fresh, part)[k])
    assert again.seconds >= first.seconds  # the head's seconds travel with its terms
    both = _entry(gan, mapped, "anogan,l_rot", "1,2")[2]
    assert both.head is None  # a mapping score keeps no head terms to reuse
    with pytest.raises(ValueError, match="same_head is an entry of other images"):
        entry_tables(rule, gan, replace(head, test=head.test[:10]), test_map, test_map, 0.0,
                     same_head=first, batch_size=32)
