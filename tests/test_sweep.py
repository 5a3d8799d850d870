"""`anogan-guide sweep`: parsing, resuming, one GPU per job, failures, results files."""

import csv
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from anogan_guide import cli, evaluate, sweep
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


def test_notebooks_per_method():
    assert sweep.notebooks_for(["gradcon", "anogan"]) == [
        "00_data_prep", "01_dcgan_training", "02_latent_mapping", "04_gradcon"]
    assert sweep.notebooks_for(["hybrid"]) == ["00_data_prep", "05_hybrid"]


def _fake_metrics(folder: Path, dataset, c, seed, methods: dict):
    entries = {m: {"auroc": a, "auprc": a, "f1": a / 2, "threshold": 0.0, "train_seconds": 2.0,
                   "score_seconds": 1.0, "score_images_per_second": 1.0, "params": {}}
               for m, a in methods.items()}
    write_json(folder / "metrics.json", {"dataset": dataset, "normal_class": c, "seed": seed,
                                         "image_size": 16, "n_train": 1, "n_val": 1, "n_test": 2,
                                         "methods": entries})


def test_finished_runs_are_skipped_and_partial_ones_run_only_what_is_missing(tmp_path,
                                                                            monkeypatch):
    out = tmp_path / "sw"
    runs = sweep.plan_runs("digits", [0, 1, 2], [0], out)
    _fake_metrics(runs[0].folder, "digits", 0, 0, {"gradcon": 0.9, "anogan-wgangp": 0.8})
    _fake_metrics(runs[1].folder, "digits", 1, 0, {"gradcon": 0.9})
    _fake_metrics(runs[2].folder, "digits", 2, 1, {"gradcon": 0.9, "anogan": 0.8})  # other seed
    assert sweep.missing_methods(runs[0], ["anogan", "gradcon"]) == []
    assert sweep.missing_methods(runs[1], ["anogan", "gradcon"]) == ["anogan"]
    assert sweep.missing_methods(runs[2], ["anogan", "gradcon"]) == ["anogan", "gradcon"]
    calls = []
    monkeypatch.setattr(sweep, "execute_run", lambda run, cmd, gpu, threads=None: calls.append(cmd) or None)
    messages = []
    failures = sweep.sweep("digits", [0, 1, 2], [0], ["anogan", "gradcon"], out,
                           overrides={"epochs": "2", "iterations": "5"},
                           declared={"00_data_prep": {"seed"}, "01_dcgan_training": {"epochs"},
                                     "02_latent_mapping": {"iterations"},
                                     "04_gradcon": {"epochs"}}, echo=messages.append)
    assert failures == {} and len(calls) == 2
    assert messages == ["sweep: 1 of 3 runs already hold anogan, gradcon; skipped"]
    by_class = {cmd[cmd.index("normal_class") + 1]: cmd for cmd in calls}
    assert set(by_class) == {"1", "2"}
    notebooks = by_class["1"][4:by_class["1"].index("-p")]
    assert notebooks == ["00_data_prep", "01_dcgan_training", "02_latent_mapping"]
    assert "iterations" in by_class["1"] and "04_gradcon" in by_class["2"]


def test_one_gpu_per_job_and_failures_reported(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "gpu_count", lambda: 2)
    busy, seen, lock = set(), [], threading.Lock()

    def fake(run, cmd, gpu, threads=None):
        assert threads is None  # GPU jobs keep the default CPU threads
        with lock:
            assert gpu not in busy, "two jobs on one GPU"
            busy.add(gpu)
            seen.append(gpu)
        time.sleep(0.05)
        with lock:
            busy.discard(gpu)
        return "boom (log: x)" if run.normal_class == 3 else None

    monkeypatch.setattr(sweep, "execute_run", fake)
    failures = sweep.sweep("digits", [0, 1, 2, 3], [0, 1], ["gradcon"], tmp_path, jobs=2,
                           echo=lambda m: None)
    assert sorted(set(seen)) == [0, 1] and len(seen) == 8
    assert failures == {"class 3 seed 0": "boom (log: x)", "class 3 seed 1": "boom (log: x)"}


def test_parallel_cpu_jobs_share_the_cores(tmp_path, monkeypatch):
    monkeypatch.setattr(sweep, "gpu_count", lambda: 0)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(sweep.os, "cpu_count", lambda: 8)
    assert sweep.cpu_threads_per_job(1) is None
    assert sweep.cpu_threads_per_job(3) == 2 and sweep.cpu_threads_per_job(16) == 1
    seen = []
    monkeypatch.setattr(sweep, "execute_run",
                        lambda run, cmd, gpu, threads=None: seen.append((gpu, threads)))
    sweep.sweep("digits", [0, 1], [0], ["gradcon"], tmp_path, jobs=4, echo=lambda m: None)
    assert seen == [(None, 2), (None, 2)]
    monkeypatch.setenv("OMP_NUM_THREADS", "3")  # the user's choice wins
    assert sweep.cpu_threads_per_job(4) is None


def test_results_files_with_published_figures(tmp_path):
    for c, seed, a in ((0, 0, 0.9), (0, 1, 0.8), (1, 0, 0.7), (1, 1, 0.5)):
        folder = sweep.plan_runs("mnist", [c], [seed], tmp_path)[0].folder
        _fake_metrics(folder, "mnist", c, seed, {"gradcon": a, "hybrid": a + 0.05})
    rows = sweep.write_results("mnist", [0, 1], [0, 1], tmp_path)
    assert len(rows) == 8
    with open(tmp_path / "results.csv") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == list(sweep.CSV_COLUMNS)
    assert table[0] == {"dataset": "mnist", "class": "0", "seed": "0", "method": "gradcon",
                        "auroc": "0.9000", "auprc": "0.9000", "f1": "0.4500",
                        "train_seconds": "2.0", "score_seconds": "1.0"}
    md = (tmp_path / "results.md").read_text()
    assert "| 0 | 0.850 ± 0.050 | 0.900 ± 0.050 |  | 0.980 | 0.998 |  |" in md
    assert "| 1 | 0.600 ± 0.100 | 0.650 ± 0.100 |  | 0.997 | 0.999 |  |" in md
    assert "| **mean** | 0.725 ± 0.125 | 0.775 ± 0.125 |  | 0.988 | 0.998 |  |" in md
    assert "| mean of all ten classes (published) |  |  | 0.937 | 0.948 | 0.975 | 0.973 |" in md
    assert "GradCon: GradCon's 50/50 test" in md and "OCGAN: official train split" in md
    digits = sweep.results_markdown([], "digits", [0], [0])
    assert "No run of the sweep has finished" in digits


def test_sweep_usage_errors_are_one_line(tmp_path):
    for args, expected in ((["-p", "normal_class", "3"], "the sweep sets these itself"),
                           (["--methods", "gradcon,svdd"], "unknown method svdd"),
                           (["--jobs", "0"], "give at least 1"),
                           (["-p", "epochz", "3"], "unknown parameter epochz")):
        result = _sweep("--classes", "0", "--methods", "gradcon", *args, "--out",
                        str(tmp_path / "sw"))
        assert result.returncode == 2, result.stderr
        assert len(result.stderr.strip().splitlines()) == 1 and expected in result.stderr
    assert not (tmp_path / "sw").exists()


def _methods_ready() -> str:
    ready = ["ganomaly", "gradcon"]
    if (REPO / "notebooks" / "05_hybrid.ipynb").is_file():
        ready.append("hybrid")
    return ",".join(ready)


@pytest.mark.slow
def test_small_sweep_writes_results_and_a_second_call_skips(tmp_path):
    """The issue's check, on tiny parameters: classes 0 and 1 of digits, seed 0."""
    methods = _methods_ready()
    args = ["--classes", "0,1", "--seeds", "0", "--methods", methods, "--jobs", "2", "-f", CI,
            "--out", str(tmp_path / "sw")]
    first = _sweep(*args)
    assert first.returncode == 0, first.stderr
    rows = list(csv.DictReader(open(tmp_path / "sw" / "results.csv")))
    assert {(r["class"], r["method"]) for r in rows} == {
        (c, m) for c in "01" for m in methods.split(",")}
    assert "## AUROC" in (tmp_path / "sw" / "results.md").read_text()
    metrics = [tmp_path / "sw" / "digits" / f"class{c}_seed0" / "metrics.json" for c in (0, 1)]
    stamps = [p.stat().st_mtime_ns for p in metrics]
    second = _sweep(*args)
    assert second.returncode == 0, second.stderr
    assert "2 of 2 runs already hold" in second.stdout + second.stderr
    assert stamps == [p.stat().st_mtime_ns for p in metrics]  # nothing ran again
    assert evaluate.read_metrics(Run(metrics[0].parent))["normal_class"] == 0


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
    assert args.func is cli.cmd_sweep and args.methods == "anogan,ganomaly,gradcon,hybrid"
