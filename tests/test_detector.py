"""ag.Detector and `anogan-guide score` / `export`: a tiny run folder on the embedded digits
(16x16, every method trained for a step or two as its notebook would), its test images written
as PNG files, and the scores read back from those files compared with scores/*.npz."""

from __future__ import annotations

import csv
import json
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

import anogan_guide as ag
from anogan_guide import (
    anogan,
    apply,
    cli,
    ensemble,
    evaluate,
    fanogan,
    ganomaly,
    gradcon,
    hybrid,
    latent,
    rotnet,
    sources,
)
from anogan_guide.detector import Detector, DetectorError, read_detector_file
from anogan_guide.method_scorers import seeded_latents
from anogan_guide.scorers import NoMap, Scorer

METHODS = ("anogan", "fanogan", "fanogan-refine", "ganomaly", "gradcon", "hybrid", "rotnet",
           "ensemble")


def _finish(run, name, split, val, test, dev, indices, params):
    evaluate.finish_method(run, name, split, val, test, dev=dev, test_indices=indices,
                           train_seconds=0.0, score_seconds=1.0, params=params)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """(run folder, split, folder of the test images as PNG files at their own 8x8 size)."""
    root = tmp_path_factory.mktemp("detector")
    run = ag.open_run(root / "run")
    ag.seed_everything(0)
    split = ag.load_split(run, dataset="digits", normal_class=0, image_size=16)
    # AnoGAN and f-AnoGAN, as 02_latent_mapping scores them (a test sample, batches of 64)
    anogan.train(split, ag.AnoganConfig(epochs=1, val_iterations=0, batch_size=32), run)
    gan = anogan.load(run)  # each notebook scores the reloaded networks
    idx = ag.subsample_test(split, 150, seed=0)
    dev_idx = ag.stratified_sample(split.dev_classes, 80, seed=0)
    x = {k: s.in_range(-1, 1).tensors() for k, s in (("val", split.val), ("test", split.test),
                                                       ("dev", split.dev))}
    mapping = dict(iterations=4, lr=0.01, lam=0.1, batch_size=64, seed=0, progress_bar=False)
    params = {"iterations": 4, "lr": 0.01, "lam": 0.1, "batch_size": 64, "gan_loss": "bce",
              "mapping": "iterative"}
    maps = [latent.map_images(gan, x[k][i], **mapping).table()
            for k, i in (("val", slice(None)), ("test", idx), ("dev", dev_idx))]
    _finish(run, "anogan", split, *maps, idx, params)
    encoder = fanogan.train_encoder(split, gan, ag.FanoganConfig(epochs=1), run)
    for kind, name in (("encoder", "fanogan"), ("encoder+refine", "fanogan-refine")):
        kw = dict(mapping, mapping=kind, refine_iterations=3)
        every = torch.arange(len(split.test))
        tables = [latent.map_images(encoder, x[k], **kw).table() for k in ("val", "test", "dev")]
        _finish(run, name, split, *tables, every, dict(params, mapping=kind, refine_iterations=3))
    # GANomaly, GradCon, the hybrid, the ensemble: the whole test set
    every = torch.arange(len(split.test))
    ganomaly.train(split, ag.GanomalyConfig(epochs=1, batch_size=32, width=8, latent_dim=16), run)
    gm = ganomaly.load(run)
    _finish(run, "ganomaly", split, *(ganomaly.score(gm, s) for s in (split.val, split.test,
                                                                     split.dev)), every, {})
    config = ag.GradConConfig(epochs=1, max_restarts=0, score_batch_size=100, grad_weight=0.05)
    gradcon.train(split, config, run)
    gc = gradcon.load(run)
    _finish(run, "gradcon", split, *(gradcon.score(gc, s, grad_weight=0.05) for s in (
        split.val, split.test, split.dev)), every, {"grad_weight": 0.05})
    hy = hybrid.train(split, ag.HybridConfig(epochs=1, batch_size=32, width=8, latent_dim=16,
                                             score_batch_size=128), run)
    _finish(run, "hybrid", split, *(hybrid.score(hy, s) for s in (split.val, split.test,
                                                                 split.dev)), every, {})
    rotnet.train(split, ag.RotnetConfig(epochs=1, batch_size=32, width=4, min_steps_per_epoch=2),
                 run)
    rn = rotnet.load(run)
    _finish(run, "rotnet", split, *(rotnet.score(rn, s) for s in (split.val, split.test,
                                                                 split.dev)), every, {})
    ensemble.finish(run, split, 0.3)
    # the test images as files, at their own size (8x8): the detector resizes them as the split
    _, _, test_images, _, _, _, _ = sources.digits()
    files = root / "files"
    files.mkdir()
    for i, image in enumerate(test_images):
        Image.fromarray(image[0].numpy()).save(files / f"{i:04d}.png")
    return run, split, files


def saved(run, method):
    s = evaluate.load_scores(run, method)
    return s.test["score"], s.test_indices


@pytest.mark.parametrize("method", METHODS)
def test_scores_from_files_equal_the_runs_saved_scores(demo, method):
    run, _, files = demo
    detector = Detector.load(run.root, method, device="cpu")
    expected, indices = saved(run, method)
    result = detector.score([files / f"{i:04d}.png" for i in indices])
    assert np.array_equal(result.score, expected), np.abs(result.score - expected).max()
    entry = evaluate.read_metrics(run)["methods"][method]
    assert result.threshold == entry["threshold"]
    val = evaluate.load_scores(run, method).val["score"]
    assert np.allclose(result.normal_percentile,
                       [100 * np.mean(val < s) for s in result.score])
    assert np.array_equal(result.anomalous, result.score > entry["threshold"])


def test_anogan_search_starts_each_image_where_the_notebook_did(demo):
    assert torch.equal(seeded_latents(5, 7, 16, 3), latent.initial_latents(12, 16, 3)[5:])
    run, _, files = demo
    expected, indices = saved(run, "anogan")
    paths = [files / f"{i:04d}.png" for i in indices]
    # other batches: the same starting points, so the same search up to float rounding
    other = Detector.load(run.root, "anogan", device="cpu").score(paths, batch_size=50).score
    assert np.allclose(other, expected, rtol=1e-4)


def test_best_method_is_chosen_on_development_auroc_never_test(demo, tmp_path, capsys):
    run, _, _ = demo
    copy = tmp_path / "run"
    shutil.copytree(run.root, copy)
    data = json.loads((copy / "metrics.json").read_text())
    for i, entry in enumerate(data["methods"].values()):
        entry["dev"]["auroc"] = 0.5 + 0.01 * i
        entry["auroc"] = 0.9 - 0.01 * i  # test ranks the other way round
    best = list(data["methods"])[-1]
    (copy / "metrics.json").write_text(json.dumps(data))
    assert Detector.load(copy, device="cpu").method == best
    line = capsys.readouterr().out.strip().splitlines()
    assert len(line) == 1 and line[0].startswith(f"method {best}: the best development AUROC")
    for entry in data["methods"].values():
        entry["dev"] = None
    (copy / "metrics.json").write_text(json.dumps(data))
    with pytest.raises(DetectorError, match="no development AUROC.*name one with method="):
        Detector.load(copy, device="cpu")


def test_a_method_the_run_lacks_names_those_it_has(demo):
    run, _, _ = demo
    with pytest.raises(KeyError, match="has no method 'anogan-wgangp'; it has anogan, fanogan"):
        Detector.load(run.root, "anogan-wgangp", device="cpu")


def test_every_kind_of_input_gives_the_same_score(demo, capsys):
    run, _, files = demo
    detector = Detector.load(run.root, "gradcon", device="cpu")
    path = files / "0007.png"
    pil = Image.open(path)
    array = np.array(pil)
    expected = detector.score(path).score
    for given in (str(path), [path], pil, array, array[:, :, None], torch.from_numpy(array),
                  torch.from_numpy(array)[None], torch.from_numpy(array)[None, None],
                  torch.from_numpy(array).float()[None] / 255):
        assert np.array_equal(detector.score(given).score, expected), type(given)
    folder = detector.score(files)
    assert len(folder) == len(list(files.glob("*.png")))
    # an RGB image for a gray run: converted as the split converts its files, said once
    rgb = np.repeat(array[:, :, None], 3, axis=2)
    capsys.readouterr()
    assert np.array_equal(detector.score([rgb, rgb]).score, np.r_[expected, expected])
    out = capsys.readouterr().out
    assert out.count("3 channels") == 1 and "converted to gray" in out
    with pytest.raises(ValueError, match="float images must lie in"):
        detector.score(torch.full((1, 8, 8), 2.0))


def test_maps_at_the_inputs_size_and_methods_without_one(demo):
    run, _, files = demo
    image = np.asarray(Image.open(files / "0003.png").resize((30, 20)))
    for method in ("ganomaly", "gradcon", "anogan", "fanogan", "hybrid", "ensemble"):
        detector = Detector.load(run.root, method, device="cpu")
        (amap,) = detector.anomaly_map(image)
        assert amap.shape == (20, 30) and torch.isfinite(amap).all(), method
    assert "gradient term" in Detector.load(run.root, "gradcon", device="cpu").map_note
    with pytest.raises(NoMap, match="rotnet classifies the turns .* no per-pixel map"):
        Detector.load(run.root, "rotnet", device="cpu").anomaly_map(image)


def test_an_ensemble_with_rotnet_scores_and_exports_as_the_run_and_has_no_map(demo, tmp_path):
    """CIFAR-10's ensemble (RotNet and the hybrid): the same scores from files, from its
    exported file, and a one-line NoMap, since RotNet has no map."""
    run, split, files = demo
    copy = ag.open_run(tmp_path / "run")
    shutil.copytree(run.root, copy.root, dirs_exist_ok=True)
    ensemble.finish(copy, split, 0.2, parts=("rotnet", "hybrid"))
    detector = Detector.load(copy.root, "ensemble", device="cpu")
    expected, indices = saved(copy, "ensemble")
    paths = [files / f"{i:04d}.png" for i in indices]
    assert np.array_equal(detector.score(paths).score, expected)
    again = Detector.load(detector.export(tmp_path / "detector.pt"), device="cpu")
    assert np.allclose(again.score(paths).score, expected, rtol=1e-5)
    with pytest.raises(NoMap, match="its part rotnet has none"):
        again.anomaly_map(paths[:1])


def test_a_recorded_complexity_correction_is_applied_to_new_images(demo, tmp_path):
    """GradCon scored with complexity_correction=True (notebook 04): its detector, the
    ensemble made with it and the exported file all score the files as the run recorded."""
    from anogan_guide import complexity

    run, split, files = demo
    copy = ag.open_run(tmp_path / "run")
    shutil.copytree(run.root, copy.root, dirs_exist_ok=True)
    gc = gradcon.load(copy)
    val, test, dev = (gradcon.score(gc, s, grad_weight=0.05) for s in (split.val, split.test,
                                                                       split.dev))
    correction = complexity.correct_tables(split, val, test, dev)
    _finish(copy, "gradcon", split, val, test, dev, torch.arange(len(split.test)),
            {"grad_weight": 0.05, complexity.PARAM: correction.params()})
    ensemble.finish(copy, split, 0.3)
    raw = evaluate.load_scores(copy, "gradcon").test
    assert not np.allclose(raw["score"], raw[complexity.RAW])  # the correction changed it
    for method in ("gradcon", "ensemble"):
        detector = Detector.load(copy.root, method, device="cpu")
        expected, indices = saved(copy, method)
        paths = [files / f"{i:04d}.png" for i in indices]
        assert np.allclose(detector.score(paths).score, expected, rtol=1e-6, atol=1e-9), method
    again = Detector.load(Detector.load(copy.root, "gradcon", device="cpu").export(
        tmp_path / "gradcon.pt"), device="cpu")
    expected, indices = saved(copy, "gradcon")
    assert np.allclose(again.score([files / f"{i:04d}.png" for i in indices[:50]]).score,
                       expected[:50], rtol=1e-5, atol=1e-6)


def test_overlays_are_saved(demo, tmp_path):
    run, _, files = demo
    detector = Detector.load(run.root, "ganomaly", device="cpu")
    scores, paths = detector.save_overlays(sorted(files.glob("000*.png"))[:3], tmp_path / "maps")
    assert len(paths) == 3 and all(Image.open(p).size[0] > 100 for p in paths)
    assert paths[0].name == "00000_0000.png" and len(scores) == 3


@pytest.mark.parametrize("method", ("anogan", "fanogan-refine", "ganomaly", "gradcon",
                                    "hybrid", "ensemble"))
def test_exported_detector_scores_and_maps_as_the_run(demo, tmp_path, method):
    run, _, files = demo
    detector = Detector.load(run.root, method, device="cpu")
    path = detector.export(tmp_path / "detector.pt")
    torch.load(path, weights_only=True)  # plain torch reads it safely
    again = Detector.load(path, device="cpu")
    assert again.method == method and again.threshold == detector.threshold
    expected, indices = saved(run, method)
    paths = [files / f"{i:04d}.png" for i in indices[:70]]
    # the exported file scores exactly as the run's own detector; both equal the run's saved
    # scores to float32 rounding (70 images are one batch here, the notebook scored batches of
    # 256: on some CPUs a kernel rounds differently at another batch size)
    assert np.array_equal(again.score(paths).score, detector.score(paths).score)
    assert np.allclose(again.score(paths).score, expected[:70], rtol=1e-5, atol=1e-6)
    for a, b in zip(again.anomaly_map(paths[:3]), detector.anomaly_map(paths[:3]), strict=True):
        assert torch.equal(a, b)


def test_detector_files_from_another_version_or_changed_are_refused(demo, tmp_path):
    run, _, _ = demo
    path = Detector.load(run.root, "ganomaly", device="cpu").export(tmp_path / "d.pt")
    outer = torch.load(path, weights_only=True)
    bad = tmp_path / "bad.pt"
    for change, message in ((lambda o: o.update(version=99), "format version 99"),
                            (lambda o: o["payload"].__setitem__(500, o["payload"][500] ^ 1),
                             "changed after it was exported"),
                            (lambda o: o.update(format="x"), "not an anogan-guide detector")):
        copy = {k: v.clone() if isinstance(v, torch.Tensor) else v for k, v in outer.items()}
        change(copy)
        torch.save(copy, bad)
        with pytest.raises(DetectorError, match=message):
            Detector.load(bad)
    bad.write_bytes(b"garbage")
    with pytest.raises(DetectorError, match="not a readable detector file"):
        read_detector_file(bad)
    with pytest.raises(DetectorError, match="is a training checkpoint"):
        Detector.load(run.checkpoint("ganomaly", "best"))
    with pytest.raises(DetectorError, match="holds a ganomaly detector, not gradcon"):
        Detector.load(path, "gradcon")


# ---------------------------------------------------------------------------------------------
# The command line


def read_csv(path):
    with open(path) as f:
        return list(csv.DictReader(f))


def test_cli_score_writes_rows_maps_and_a_summary(demo, tmp_path, capsys):
    run, _, files = demo
    some = tmp_path / "some"
    some.mkdir()
    for i in range(80):  # in a subfolder: searched recursively
        (some / f"{i:04d}.png").symlink_to(files / f"{i:04d}.png")
    out, maps = tmp_path / "scores.csv", tmp_path / "maps"
    rc = cli.main(["score", str(run.root), str(tmp_path / "some"), "--method", "gradcon",
                   "--out", str(out), "--maps", str(maps), "--batch-size", "32", "--workers", "0"])
    assert rc == 0
    rows = read_csv(out)
    assert list(rows[0]) == list(apply.CSV_COLUMNS) and len(rows) == 80
    expected, _ = saved(run, "gradcon")
    assert np.allclose([float(r["score"]) for r in rows], expected[:80], rtol=1e-6)
    assert sorted(p.name for p in maps.glob("*.png"))[:2] == ["00000_0000.png", "00001_0001.png"]
    assert len(list(maps.glob("*.png"))) == 80
    summary = capsys.readouterr().out.strip().splitlines()[-1]
    n_anomalous = sum(r["anomalous"] == "1" for r in rows)
    assert summary.startswith(f"gradcon: 80 images scored, {n_anomalous} anomalous")


def test_cli_bad_files_are_named_and_skipped(demo, tmp_path, capsys):
    run, _, files = demo
    images = tmp_path / "images" / "sub"
    images.mkdir(parents=True)
    for name in ("0001.png", "0002.png"):
        shutil.copy(files / name, images / name)
    (images / "broken.png").write_text("not an image")
    (images / "notes.txt").write_text("ignored: not an image extension")
    out = tmp_path / "s.csv"
    rc = cli.main(["score", str(run.root), str(tmp_path / "images"), "--method", "ganomaly",
                   "--out", str(out), "--workers", "1"])
    err = capsys.readouterr().err
    assert rc == 1 and "cannot read image" in err and "broken.png" in err
    assert [r["path"].rsplit("/", 1)[1] for r in read_csv(out)] == ["0001.png", "0002.png"]


def test_cli_refuses_empty_folders_unknown_methods_and_leaves_no_partial_csv(
        demo, tmp_path, capsys, monkeypatch):
    run, _, files = demo
    (tmp_path / "empty").mkdir()
    out = tmp_path / "s.csv"
    assert cli.main(["score", str(run.root), str(tmp_path / "empty"), "--out", str(out)]) == 1
    assert "no images under" in capsys.readouterr().err and not out.exists()
    assert cli.main(["score", str(run.root), str(files), "--method", "anogan-wgangp", "--out",
                     str(out)]) == 1
    assert "has no method 'anogan-wgangp'; it has anogan" in capsys.readouterr().err
    # a failure half-way: no CSV, no temporary file
    calls = []

    def failing(self, images, with_maps=False):
        calls.append(1)
        if len(calls) > 1:
            raise RuntimeError("out of memory")
        return original(self, images, with_maps)

    original = Scorer.run
    monkeypatch.setattr(Scorer, "run", failing)
    with pytest.raises(RuntimeError):
        cli.main(["score", str(run.root), str(files), "--method", "ganomaly", "--out", str(out),
                  "--batch-size", "100", "--workers", "0"])
    assert not out.exists() and not list(tmp_path.glob(".s.csv.*"))


def test_cli_export_then_score_gives_the_runs_scores(demo, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("ANOGAN_GUIDE_QUIET", "1")  # no progress bar on stderr: one line is counted
    run, _, files = demo
    path = tmp_path / "detector.pt"
    assert cli.main(["export", str(run.root), "--method", "ensemble", "--out", str(path)]) == 0
    out = tmp_path / "s.csv"
    assert cli.main(["score", str(path), str(files), "--out", str(out), "--workers", "0"]) == 0
    expected, _ = saved(run, "ensemble")
    got = np.array([float(r["score"]) for r in read_csv(out)])
    assert np.allclose(got, expected, rtol=1e-6, atol=1e-6)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one byte in the middle of the payload
    path.write_bytes(bytes(data))
    assert cli.main(["score", str(path), str(files), "--out", str(out)]) == 1
    assert capsys.readouterr().err.count("\n") == 1


def test_exported_file_holds_the_checkpoints_without_optimiser_states(demo):
    run, _, _ = demo
    detector = Detector.load(run.root, "fanogan", device="cpu")
    payload = read_detector_file(detector.export(run.root.parent / "f.pt"))
    assert set(payload["checkpoints"]) == {"anogan_best", "fanogan_best"}
    assert all(not c["optimizers"] for c in payload["checkpoints"].values())
