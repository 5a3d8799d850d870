"""`anogan-guide sweep`: parsing, resuming, one GPU per job, failures, results files."""

import csv
import os
import subprocess
import sys
import threading
import time
from functools import partial
from pathlib import Path

import pytest
import yaml

from anogan_guide import cli, engines, evaluate, results, sweep
from anogan_guide.runs import Run, write_json

REPO = Path(__file__).resolve().parents[1]
CI = str(REPO / "params" / "ci.yaml")


def _sweep(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "anogan_guide.cli", "sweep", *args],
                          capture_output=True, text=True, timeout=900, cwd=cwd)


def test_parse_lists_and_methods():
    assert sweep.parse_list("0-9", "class") == list(range(10))
    assert sweep.parse_list("0-2,7,1", "class") == [0, 1, 2, 7]
    assert sweep.parse_list("good,bad", "class", integers=False) == ["good", "bad"]
    assert sweep.parse_methods("gradcon,anogan") == ["gradcon", "anogan"]
    with pytest.raises(sweep.SweepError, match="runs backwards"):
        sweep.parse_list("5-2", "class")
    with pytest.raises(sweep.SweepError, match="'x' is not a number"):
        sweep.parse_list("1,x", "seed")
    with pytest.raises(sweep.SweepError, match="unknown method fanogan; use any of: anogan"):
        sweep.parse_methods("gradcon,fanogan")
    with pytest.raises(sweep.SweepError, match="ensemble is made from ganomaly and gradcon: list "
                                                 "ganomaly too, e.g. --methods gradcon,ensemble,ganomaly"):
        sweep.parse_methods("gradcon,ensemble")
    assert sweep.parse_methods("ganomaly,gradcon,ensemble") == ["ganomaly", "gradcon", "ensemble"]
    # an ensemble of other parts (-p parts rotnet,gradcon) needs those parts instead
    parts = {"06_ensemble": {"parts": "rotnet,gradcon"}}
    assert sweep.parse_methods("rotnet,gradcon,ensemble", parts) == ["rotnet", "gradcon", "ensemble"]
    with pytest.raises(sweep.SweepError, match="ensemble is made from rotnet and gradcon: list rotnet"):
        sweep.parse_methods("ganomaly,gradcon,ensemble", parts)
    with pytest.raises(sweep.SweepError, match="ensemble cannot be made from fanogan"):
        sweep.parse_methods("gradcon,ensemble", {"06_ensemble": {"parts": "fanogan,gradcon"}})
    assert sweep.notebooks_for(["rotnet", "gradcon"]) == ["00_data_prep", "04_gradcon", "05b_rotnet"]


def test_notebooks_per_method():
    assert sweep.notebooks_for(["gradcon", "anogan"]) == [
        "00_data_prep", "01_dcgan_training", "02_latent_mapping", "04_gradcon"]
    assert sweep.notebooks_for(["hybrid"]) == ["00_data_prep", "05_hybrid"]


def _fake_metrics(folder: Path, dataset, c, seed, methods: dict, *, dev=True):
    entries = {m: {"auroc": a, "auprc": a, "f1": a / 2, "threshold": 0.0,
                   "dev": {"auroc": a - 0.01, "auprc": a - 0.02, "n_normal": 1, "n_anomalous": 9},
                   "train_seconds": 2.0, "score_seconds": 1.0, "score_images_per_second": 1.0,
                   "params": {}} for m, a in methods.items()}
    if not dev:  # an entry made before the development set
        entries = {m: {k: v for k, v in e.items() if k != "dev"} for m, e in entries.items()}
    write_json(folder / "metrics.json", {"dataset": dataset, "normal_class": c, "seed": seed,
                                         "image_size": 16, "n_train": 1, "n_val": 1, "n_test": 2,
                                         "methods": entries})


def _plan(overrides=None):
    """A stand-in for the CLI's resolved parameters: every notebook gets the run's own values."""
    def plan(run):
        own = {"dataset": run.dataset, "normal_class": run.normal_class, "seed": run.seed,
               "run_dir": str(run.folder), **(overrides or {})}
        return {nb: dict(own) for nb in ("00_data_prep", *sum(sweep.METHOD_NOTEBOOKS.values(), ()))}
    return plan


def _record(folder: Path, plan, run, notebooks):
    data = evaluate.read_metrics(Run(folder))
    data["parameters"] = {nb: plan(run)[nb] for nb in notebooks}
    write_json(folder / "metrics.json", data)


def _recording_engine(calls):
    def engine(tasks):
        for task in tasks:
            calls.append(task)
            yield task, None
    return engine


def test_finished_runs_are_skipped_and_partial_ones_run_only_what_is_missing(tmp_path):
    out, plan = tmp_path / "sw", _plan()
    runs = sweep.plan_runs("digits", [0, 1, 2], [0], out)
    _fake_metrics(runs[0].folder, "digits", 0, 0, {"gradcon": 0.9, "anogan-wgangp": 0.8})
    _record(runs[0].folder, plan, runs[0], ["00_data_prep", "01_dcgan_training",
                                            "02_latent_mapping", "04_gradcon"])
    _fake_metrics(runs[1].folder, "digits", 1, 0, {"gradcon": 0.9})
    _record(runs[1].folder, plan, runs[1], ["00_data_prep", "04_gradcon"])
    _fake_metrics(runs[2].folder, "digits", 2, 1, {"gradcon": 0.9, "anogan": 0.8})  # other seed
    status = {i: {m: sweep.method_status(evaluate.read_metrics(Run(r.folder)), r, m, plan(r))
                  for m in ("anogan", "gradcon")} for i, r in enumerate(runs)}
    assert status == {0: {"anogan": "same", "gradcon": "same"},
                      1: {"anogan": "missing", "gradcon": "same"},
                      2: {"anogan": "missing", "gradcon": "missing"}}
    calls, messages = [], []
    outcome = sweep.sweep("digits", [0, 1, 2], [0], ["anogan", "gradcon"], out, plan=plan,
                          engine=_recording_engine(calls), echo=messages.append)
    assert outcome.failures == {} and (outcome.skipped, outcome.rerun, outcome.run) == (1, 0, 2)
    assert messages == ["sweep: 3 runs: 1 skipped (finished with these parameters), 0 re-run "
                        "(made with other parameters), 2 run"]
    by_name = {task.name: task for task in calls}
    assert set(by_name) == {"class 1 seed 0", "class 2 seed 0"}
    assert by_name["class 1 seed 0"].args[:3] == ("00_data_prep", "01_dcgan_training",
                                                  "02_latent_mapping")
    assert "04_gradcon" in by_name["class 2 seed 0"].args
    # the run's subprocess gets exactly the planned parameters of the notebooks it runs
    written = yaml.safe_load((runs[1].folder / "sweep-parameters.yaml").read_text())
    assert written == {"notebooks": {nb: plan(runs[1])[nb] for nb in
                                     ("00_data_prep", "01_dcgan_training", "02_latent_mapping")}}


def test_a_finished_training_is_reloaded_not_repeated(tmp_path):
    """A GAN trained with the requested values whose mapping was interrupted: 01 runs again with
    `resume: true` (it reloads the finished training), 02 as planned; one trained with other
    values, or given `resume` explicitly, runs as requested."""
    out, plan = tmp_path / "sw", _plan()
    defaults = {nb: {"epochs": 5} for nb in ("00_data_prep", "02_latent_mapping")}
    defaults["01_dcgan_training"] = {"epochs": 5, "resume": False}
    runs = sweep.plan_runs("digits", [0, 1], [0], out)
    for run in runs:
        _fake_metrics(run.folder, "digits", run.normal_class, 0, {})
        for stem in ("00_data_prep", "01_dcgan_training"):  # 02 never finished
            evaluate.record_parameters(Run(run.folder), stem, plan(run)[stem], defaults[stem])
    evaluate.record_parameters(Run(runs[1].folder), "01_dcgan_training",
                               {**plan(runs[1])["01_dcgan_training"], "epochs": 2},
                               defaults["01_dcgan_training"])
    sweep.sweep("digits", [0, 1], [0], ["anogan"], out, plan=plan, defaults=defaults,
                engine=_recording_engine(calls := []), echo=lambda m: None)
    assert [task.name for task in calls] == ["class 0 seed 0", "class 1 seed 0"]
    written = [yaml.safe_load((r.folder / "sweep-parameters.yaml").read_text())["notebooks"]
               for r in runs]
    assert written[0]["01_dcgan_training"] == {**plan(runs[0])["01_dcgan_training"], "resume": True}
    assert written[0]["02_latent_mapping"] == plan(runs[0])["02_latent_mapping"]
    assert written[1]["01_dcgan_training"] == plan(runs[1])["01_dcgan_training"]  # trains again
    explicit = _plan({"resume": False})
    sweep.sweep("digits", [0], [0], ["anogan"], out, plan=explicit, defaults=defaults,
                engine=_recording_engine([]), echo=lambda m: None)
    assert yaml.safe_load((runs[0].folder / "sweep-parameters.yaml").read_text())["notebooks"][
        "01_dcgan_training"]["resume"] is False


def _finished_ensemble_run(out: Path, plan):
    """One run whose GANomaly, GradCon and ensemble (and their score files) are finished with
    `plan`'s parameters: the sweep skips it. Returns (run, methods)."""
    run = sweep.plan_runs("digits", [0], [0], out)[0]
    _fake_metrics(run.folder, "digits", 0, 0, {"ganomaly": 0.8, "gradcon": 0.9, "ensemble": 0.95})
    _record(run.folder, plan, run, ["00_data_prep", "03_ganomaly", "04_gradcon", "06_ensemble"])
    _fake_scores(run.folder, "ganomaly", "gradcon", "ensemble")
    methods = ["ganomaly", "gradcon", "ensemble"]
    assert sweep.sweep("digits", [0], [0], methods, out, plan=plan, engine=_recording_engine([]),
                       echo=lambda m: None).skipped == 1
    return run, methods


def test_the_ensemble_runs_again_when_a_part_does(tmp_path):
    out, old = tmp_path / "sw", _plan({"epochs": 2})
    run, methods = _finished_ensemble_run(out, old)

    def new(r):  # only GradCon's epochs change: its scores, so the ensemble's, change
        planned = old(r)
        planned["04_gradcon"]["epochs"] = 3
        return planned

    sweep.sweep("digits", [0], [0], methods, out, plan=new, engine=_recording_engine(calls := []),
                echo=lambda m: None)
    assert calls[0].args[:3] == ("00_data_prep", "04_gradcon", "06_ensemble")


def test_an_ensemble_older_than_a_part_made_again_since_runs_again(tmp_path):
    """A sweep stopped between a part (made again: new parameters) and the ensemble leaves the
    old ensemble entry, recorded with unchanged parameters: its scores are older than the part's,
    so the next sweep runs the ensemble (only) again."""
    out, plan = tmp_path / "sw", _plan()
    run, methods = _finished_ensemble_run(out, plan)
    ganomaly = Run(run.folder).scores / "ganomaly.npz"
    later = (Run(run.folder).scores / "ensemble.npz").stat().st_mtime + 60
    os.utime(ganomaly, (later, later))
    sweep.sweep("digits", [0], [0], methods, out, plan=plan, engine=_recording_engine(calls := []),
                echo=lambda m: None)
    assert [a for a in calls[0].args if not a.startswith("-")][:2] == \
        ["00_data_prep", "06_ensemble"]
    assert "03_ganomaly" not in calls[0].args and "04_gradcon" not in calls[0].args
    # the same when the ensemble's score file is not there at all beside its parts' files
    (Run(run.folder).scores / "ensemble.npz").unlink()
    sweep.sweep("digits", [0], [0], methods, out, plan=plan, engine=_recording_engine(calls := []),
                echo=lambda m: None)
    assert [a for a in calls[0].args if not a.startswith("-")][:2] == \
        ["00_data_prep", "06_ensemble"]


def test_an_ensemble_older_than_a_part_runs_again_in_a_clone_without_scores(tmp_path):
    """The same in a fresh clone (metrics.json, no score files): the entries' `made` stamps say
    GANomaly was made after the ensemble, so the ensemble runs again, with the parts whose
    scores it needs; stamped the other way round, the run is skipped."""
    out, plan = tmp_path / "sw", _plan()
    run, methods = _finished_ensemble_run(out, plan)
    for method in methods:
        (Run(run.folder).scores / f"{method}.npz").unlink()
    data = evaluate.read_metrics(Run(run.folder))
    stamps = {"gradcon": "2026-12-01T10:00:00+00:00", "ensemble": "2026-12-01T11:00:00+00:00",
              "ganomaly": "2026-12-01T12:00:00+00:00"}
    for method, made in stamps.items():
        data["methods"][method]["made"] = made
    write_json(Run(run.folder).metrics_path, data)
    sweep.sweep("digits", [0], [0], methods, out, plan=plan, engine=_recording_engine(calls := []),
                echo=lambda m: None)
    assert [a for a in calls[0].args if not a.startswith("-")][:4] == \
        ["00_data_prep", "03_ganomaly", "04_gradcon", "06_ensemble"]
    data["methods"]["ganomaly"]["made"] = "2026-12-01T09:00:00+00:00"
    write_json(Run(run.folder).metrics_path, data)
    assert sweep.sweep("digits", [0], [0], methods, out, plan=plan,
                       engine=_recording_engine([]), echo=lambda m: None).skipped == 1


def test_every_entry_is_stamped_when_it_is_made(tmp_path):
    run = Run(tmp_path / "run")
    run.root.mkdir()
    _fake_metrics(run.root, "digits", 0, 0, {})
    entry = {k: 0.5 for k in evaluate.METRIC_KEYS}
    first = evaluate.record_method(run, "gradcon", entry)["methods"]["gradcon"]["made"]
    again = evaluate.record_method(run, "gradcon", entry)["methods"]["gradcon"]["made"]
    assert first < again and again.endswith("+00:00")


def _fake_scores(folder: Path, *methods: str) -> None:
    for method in methods:
        (Run(folder).scores).mkdir(parents=True, exist_ok=True)
        (Run(folder).scores / f"{method}.npz").write_bytes(b"")


def test_an_ensemble_whose_parts_scores_are_gone_runs_those_parts_again(tmp_path):
    """A fresh clone holds metrics.json but no scores: an ensemble that runs (new parts here)
    runs again the parts whose scores are not in the run folder, not those whose scores are,
    and a part that is not needed is skipped."""
    out, plan = tmp_path / "sw", _plan()
    run = sweep.plan_runs("digits", [0], [0], out)[0]
    _fake_metrics(run.folder, "digits", 0, 0, {"ganomaly": 0.8, "gradcon": 0.9, "rotnet": 0.9,
                                               "ensemble": 0.95})
    _record(run.folder, plan, run, ["00_data_prep", "03_ganomaly", "04_gradcon", "05b_rotnet",
                                    "06_ensemble"])
    _fake_scores(run.folder, "ganomaly")

    def new_parts(r):
        planned = plan(r)
        planned["06_ensemble"]["parts"] = "rotnet,ganomaly"
        return planned

    methods = sweep.parse_methods("ganomaly,gradcon,rotnet,ensemble", new_parts(run))
    sweep.sweep("digits", [0], [0], methods, out, plan=new_parts,
                engine=_recording_engine(calls := []), echo=lambda m: None)
    assert [a for a in calls[0].args if not a.startswith("-")][:3] == \
        ["00_data_prep", "05b_rotnet", "06_ensemble"]
    assert "04_gradcon" not in calls[0].args and "03_ganomaly" not in calls[0].args


def test_changed_parameters_rerun_what_they_change_or_are_kept_and_flagged(tmp_path):
    out, old = tmp_path / "sw", _plan({"epochs": 2})
    runs = sweep.plan_runs("digits", [0, 1], [0], out)
    for run in runs:
        _fake_metrics(run.folder, "digits", run.normal_class, 0, {"gradcon": 0.9, "ganomaly": 0.8})
        _record(run.folder, old, run, ["00_data_prep", "03_ganomaly", "04_gradcon"])
    _record(runs[1].folder, old, runs[1], ["00_data_prep", "03_ganomaly"])  # 04 never recorded

    def new(run):  # only GradCon's epochs change
        planned = old(run)
        planned["04_gradcon"]["epochs"] = 3
        return planned

    calls = []
    outcome = sweep.sweep("digits", [0, 1], [0], ["ganomaly", "gradcon"], out, plan=new,
                          engine=_recording_engine(calls), echo=lambda m: None)
    # class 0: GradCon made with epochs 2, re-run; class 1: GradCon's run never recorded its
    # parameters (interrupted at its end), so it is not finished: run
    assert (outcome.skipped, outcome.rerun, outcome.run) == (0, 1, 1)
    assert [task.args[:2] for task in calls] == [("00_data_prep", "04_gradcon")] * 2
    # the same call with the unchanged parameters skips everything
    assert sweep.sweep("digits", [0, 1], [0], ["ganomaly"], out, plan=new,
                       engine=_recording_engine([]), echo=lambda m: None).skipped == 2
    # a moved run folder or data folder is the same run
    moved = _plan({"epochs": 2, "data_root": "/elsewhere"})
    assert sweep.method_status(evaluate.read_metrics(Run(runs[0].folder)), runs[0], "ganomaly",
                               {k: {**v, "run_dir": "/x"} for k, v in moved(runs[0]).items()}
                               ) == "same"
    kept = sweep.sweep("digits", [0, 1], [0], ["ganomaly", "gradcon"], out, plan=new,
                       engine=_recording_engine(calls := []), keep_different=True,
                       echo=lambda m: None)
    assert [task.name for task in calls] == ["class 1 seed 0"] and kept.skipped == 1
    assert kept.kept_different == {("0", 0, "gradcon"): "epochs 2 (requested 3)"}
    results.write_results("digits", [0, 1], [0], out, flagged=kept.kept_different)
    md = (out / "results.md").read_text()
    assert "| 0 | 0.900 † | 0.800 |" in md
    assert "* class 0 seed 0, gradcon: epochs 2 (requested 3)" in md


def test_one_gpu_per_job_and_failures_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(engines, "gpu_count", lambda: 2)
    busy, seen, lock = set(), [], threading.Lock()

    def fake(task, env, stop=None):
        gpu = env.get("CUDA_VISIBLE_DEVICES")
        assert "OMP_NUM_THREADS" not in env  # GPU jobs keep the default CPU threads
        with lock:
            assert gpu not in busy, "two jobs on one GPU"
            busy.add(gpu)
            seen.append(gpu)
        time.sleep(0.05)
        with lock:
            busy.discard(gpu)
        return "boom (log: x)" if "class 3" in task.name else None

    monkeypatch.setattr(engines, "execute_run", fake)
    outcome = sweep.sweep("digits", [0, 1, 2, 3], [0, 1], ["gradcon"], tmp_path, plan=_plan(),
                          engine=partial(engines.run_local, jobs=2), echo=lambda m: None)
    assert sorted(set(seen)) == ["0", "1"] and len(seen) == 8
    assert outcome.failures == {"class 3 seed 0": "boom (log: x)",
                                "class 3 seed 1": "boom (log: x)"}


def test_parallel_cpu_jobs_share_the_cores(tmp_path, monkeypatch):
    monkeypatch.setattr(engines, "gpu_count", lambda: 0)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(engines.os, "cpu_count", lambda: 8)
    assert engines.cpu_threads_per_job(1) is None
    assert engines.cpu_threads_per_job(3) == 2 and engines.cpu_threads_per_job(16) == 1
    seen = []
    monkeypatch.setattr(engines, "execute_run",
                        lambda task, env, stop=None: seen.append((env.get("CUDA_VISIBLE_DEVICES"),
                                                       env.get("OMP_NUM_THREADS"))))
    sweep.sweep("digits", [0, 1], [0], ["gradcon"], tmp_path, plan=_plan(),
                engine=partial(engines.run_local, jobs=4), echo=lambda m: None)
    assert seen == [(None, "2"), (None, "2")]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice wins
    assert engines.cpu_threads_per_job(4) is None


def test_results_files_with_published_figures(tmp_path):
    for c, seed, a in ((0, 0, 0.9), (0, 1, 0.8), (1, 0, 0.7), (1, 1, 0.5)):
        folder = sweep.plan_runs("mnist", [c], [seed], tmp_path)[0].folder
        _fake_metrics(folder, "mnist", c, seed, {"gradcon": a, "hybrid": a + 0.05})
    rows = results.write_results("mnist", [0, 1], [0, 1], tmp_path)
    assert len(rows) == 8
    with open(tmp_path / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == list(results.CSV_COLUMNS)
    assert table[0] == {"dataset": "mnist", "class": "0", "seed": "0", "method": "gradcon",
                        "auroc": "0.9000", "auprc": "0.9000", "f1": "0.4500",
                        "dev_auroc": "0.8900", "dev_auprc": "0.8800",
                        "train_seconds": "2.0", "score_seconds": "1.0", "pixel_auroc": ""}
    md = (tmp_path / "results.md").read_text()
    assert "(dev)" not in md and "Pixel AUROC" not in md  # no masks, no pixel table
    assert "| 0 | 0.850 ± 0.050 | 0.900 ± 0.050 |  | 0.980 | 0.998 |  |" in md
    assert "| 1 | 0.600 ± 0.100 | 0.650 ± 0.100 |  | 0.997 | 0.999 |  |" in md
    assert "| **mean** | 0.725 ± 0.125 | 0.775 ± 0.125 |  | 0.988 | 0.998 |  |" in md
    assert "| mean of all ten classes (published) |  |  | 0.937 | 0.948 | 0.975 | 0.973 |" in md
    assert "GradCon: GradCon's 50/50 test" in md and "OCGAN: official train split" in md
    digits = results.results_markdown([], "digits", [0], [0])
    assert "No run of the sweep has finished" in digits
    # --dev: each method's development figure beside its test figure, before the published ones
    results.write_results("mnist", [0, 1], [0, 1], tmp_path, dev=True)
    md = (tmp_path / "results.md").read_text()
    assert "| class | gradcon | hybrid | gradcon (dev) | hybrid (dev) | AnoGAN" in md
    assert "| 0 | 0.850 ± 0.050 | 0.900 ± 0.050 | 0.840 ± 0.050 | 0.890 ± 0.050 |  | 0.980 |" in md
    assert "other classes' *training* images (no test image)" in md


def test_a_class_with_fewer_seeds_than_its_column_says_how_many(tmp_path):
    """A sweep still running: class 1 has seed 0 only, so its cell says so; a column run on one
    seed everywhere says nothing."""
    for c, seed in ((0, 0), (0, 1), (1, 0)):
        _fake_metrics(sweep.plan_runs("mnist", [c], [seed], tmp_path)[0].folder, "mnist", c,
                      seed, {"gradcon": 0.9 - 0.1 * seed, **({"hybrid": 0.8} if seed == 0 else {})})
    results.write_results("mnist", [0, 1], [0, 1], tmp_path)
    md = (tmp_path / "results.md").read_text()
    assert "| 0 | 0.850 ± 0.050 | 0.800 |" in md  # hybrid: seed 0 in every class, no note
    assert "| 1 | 0.900 (1 of 2 seeds) | 0.800 |" in md
    assert "| **mean** | 0.875 ± 0.025 | 0.800 ± 0.000 |" in md
    assert results.seeds_note(3, 3) == "" and results.seeds_note(2, 3) == " (2 of 3 seeds)"


def test_a_sweep_of_some_runs_keeps_the_folders_other_runs_in_its_table(tmp_path):
    for c, seed in ((0, 0), (0, 1), (1, 0), (1, 1)):
        _fake_metrics(sweep.plan_runs("mnist", [c], [seed], tmp_path)[0].folder, "mnist", c,
                      seed, {"gradcon": 0.9})
    stray = tmp_path / "mnist" / "class7_seed0"  # a folder whose metrics.json is another run's
    _fake_metrics(stray, "mnist", 3, 0, {"gradcon": 0.1})
    assert sweep.runs_on_disk("mnist", tmp_path) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    rows = results.write_results("mnist", [1], [1], tmp_path)  # re-made: class 1, seed 1
    assert [(r["class"], r["seed"]) for r in rows] == [(0, 0), (0, 1), (1, 0), (1, 1)]
    md = (tmp_path / "results.md").read_text()
    assert "Classes 0, 1; seeds 0, 1." in md and "| 0 | 0.900 ± 0.000 |" in md
    assert results.table_scope("folder", ["truck", "airplane"], [2], tmp_path) == (
        ["airplane", "truck"], [2])


def test_where_and_resume_do_not_make_a_run_stale():
    recorded = {"epochs": 2, "run_dir": "/a", "data_root": "/d", "resume": False}
    assert sweep.comparable(recorded) == sweep.comparable(
        {"epochs": 2, "run_dir": "/b", "data_root": "/e", "resume": True}) == {"epochs": 2}


def test_entries_without_development_figures_run_again(tmp_path):
    out, plan = tmp_path / "sw", _plan()
    run = sweep.plan_runs("digits", [0], [0], out)[0]
    _fake_metrics(run.folder, "digits", 0, 0, {"gradcon": 0.9}, dev=False)
    _record(run.folder, plan, run, ["00_data_prep", "04_gradcon"])
    assert sweep.method_status(evaluate.read_metrics(Run(run.folder)), run, "gradcon",
                               plan(run)) == "missing"
    _fake_metrics(run.folder, "digits", 0, 0, {"gradcon": 0.9})
    _record(run.folder, plan, run, ["00_data_prep", "04_gradcon"])
    assert sweep.method_status(evaluate.read_metrics(Run(run.folder)), run, "gradcon",
                               plan(run)) == "same"


def test_sweep_usage_errors_are_one_line(tmp_path):
    for args, expected in ((["-p", "normal_class", "3"], "the sweep sets these itself"),
                           (["--methods", "gradcon,svdd"], "unknown method svdd"),
                           (["--jobs", "0"], "give at least 1"),
                           (["--cpus-per-run", "2"], "only apply to --engine ray"),
                           (["--engine", "ray", "--jobs", "2"], "only applies to --engine local"),
                           (["--engine", "ray", "--cpus-per-run", "0"], "more than 0 CPUs"),
                           (["-p", "epochz", "3"], "unknown parameter epochz")):
        result = _sweep("--classes", "0", "--methods", "gradcon", *args, "--out",
                        str(tmp_path / "sw"))
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr
    assert not (tmp_path / "sw").exists()


@pytest.mark.slow
def test_a_failing_run_is_reported_and_the_sweep_exits_non_zero(tmp_path):
    # digits has no class 12: 00_data_prep fails at once for that run
    result = _sweep("--classes", "12", "--methods", "gradcon", "-f", CI,
                    "--out", str(tmp_path / "sw"))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert any("class 12 seed 0 failed: anogan-guide: 00_data_prep.ipynb failed" in line
               for line in lines), result.stderr
    assert "1 of 1 runs failed (class 12 seed 0)" in lines[-1]
    assert (tmp_path / "sw" / "results.csv").is_file()
    assert (tmp_path / "sw" / "digits" / "class12_seed0" / "sweep.log").is_file()


def test_cli_has_the_sweep_command():
    args = cli.build_parser().parse_args(["sweep", "--out", "x"])
    assert args.func is cli.cmd_sweep and args.methods == "anogan,ganomaly,gradcon,hybrid,ensemble"


def test_a_changed_notebook_default_reruns_runs_that_recorded_defaults(tmp_path):
    """A run records its notebooks' parameters-cell defaults beside the passed values, so a
    default changed since (a default chosen on the development split, say) re-runs it; a record
    from before defaults were recorded compares the passed values only."""
    out, plan = tmp_path / "sw", _plan()
    run = sweep.plan_runs("digits", [0], [0], out)[0]
    _fake_metrics(run.folder, "digits", 0, 0, {"gradcon": 0.9})
    _record(run.folder, plan, run, ["00_data_prep", "04_gradcon"])
    then = {"00_data_prep": {"val_fraction": 0.1}, "04_gradcon": {"grad_weight": 0.12, "epochs": 20}}
    now = {**then, "04_gradcon": {"grad_weight": 0.03, "epochs": 20}}
    data = evaluate.read_metrics(Run(run.folder))
    assert sweep.method_status(data, run, "gradcon", plan(run), now) == "same"  # no defaults kept
    for stem, values in then.items():
        evaluate.record_parameters(Run(run.folder), stem, plan(run)[stem], values)
    data = evaluate.read_metrics(Run(run.folder))
    assert data["defaults"] == then
    assert sweep.method_status(data, run, "gradcon", plan(run), then) == "same"
    assert sweep.method_status(data, run, "gradcon", plan(run), now) == "different"
    assert sweep.parameter_changes(data, "gradcon", plan(run), now) == \
        "grad_weight 0.12 (requested 0.03)"
    # passing the new value: still not what ran; once run with it, the default alone matches
    passed = {**plan(run), "04_gradcon": {**plan(run)["04_gradcon"], "grad_weight": 0.03}}
    assert sweep.method_status(data, run, "gradcon", passed, now) == "different"
    evaluate.record_parameters(Run(run.folder), "04_gradcon", passed["04_gradcon"], now["04_gradcon"])
    assert sweep.method_status(evaluate.read_metrics(Run(run.folder)), run, "gradcon", plan(run),
                               now) == "same"
    # a parameter added to the notebook since the run defaults to what the run did
    added = {**now, "04_gradcon": {**now["04_gradcon"], "new_option": 1}}
    assert sweep.method_status(evaluate.read_metrics(Run(run.folder)), run, "gradcon", plan(run),
                               added) == "same"
    evaluate.record_parameters(Run(run.folder), "04_gradcon", None)  # forgotten before a re-run
    assert "04_gradcon" not in evaluate.read_metrics(Run(run.folder))["defaults"]
