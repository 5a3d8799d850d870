"""`anogan-guide run`: parameters, run folders, failures and the split it writes."""

import json
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from anogan_guide import cli, runs

REPO = Path(__file__).resolve().parents[1]
DATA_PREP = REPO / "notebooks" / "00_data_prep.ipynb"


def _run(*args, cwd=REPO):
    return subprocess.run([sys.executable, "-m", "anogan_guide.cli", "run", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600)


def test_unknown_parameter_is_an_error(tmp_path):
    result = _run(str(DATA_PREP), "-p", "epochz", "3", "--out", str(tmp_path / "r"))
    assert result.returncode == 2
    assert "unknown parameter epochz" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()  # nothing started, nothing written


def test_unknown_parameter_in_file_is_an_error(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("dataset: digits\nnotebooks:\n  00_data_prep: {epochs: 2}\n")
    args = cli.build_parser().parse_args(
        ["run", str(DATA_PREP), "-f", str(params), "--out", str(tmp_path / "r")])
    with pytest.raises(cli.UsageError, match="unknown parameter epochs for 00_data_prep"):
        cli.cmd_run(args)


def test_failing_notebook_is_named_with_its_cell(tmp_path):
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("x: int = 1  # a parameter",
                                          metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("print('fine')"),
                nbformat.v4.new_code_cell("raise ValueError('broken on purpose')"),
                nbformat.v4.new_code_cell("print('never')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    path = tmp_path / "99_broken.ipynb"
    nbformat.write(nb, path)
    result = _run(str(path), str(DATA_PREP), "--out", str(tmp_path / "r"))
    assert result.returncode == 1
    last = result.stderr.strip().splitlines()[-1]  # the kernel may warn on stderr before it
    assert "99_broken.ipynb failed in cell [3] (\"raise ValueError('broken on purpose')\")" in last
    assert "ValueError: broken on purpose" in last
    assert not (tmp_path / "r" / "notebooks" / "00_data_prep.ipynb").exists()  # stopped there


def test_a_run_folder_in_use_is_refused_at_once(tmp_path):
    out = tmp_path / "r"
    with runs.run_lock(out):  # as another `anogan-guide run` (or sweep) writing there
        result = _run(str(DATA_PREP), "--out", str(out))
        assert result.returncode == 1
        line = result.stderr.strip().splitlines()[-1]
        assert f"run folder {out} is in use by another anogan-guide run (pid " in line
        assert "wait for it to finish or stop it" in line
        assert not (out / "notebooks" / "00_data_prep.ipynb").exists()
    with runs.run_lock(out):  # released when its holder is done
        pass


@pytest.mark.slow
def test_data_prep_writes_the_split_another_process_makes_and_another_seed_changes(tmp_path):
    """The notebook's split.json equals the split this process makes with the same parameters
    (another process: no ordering left to chance) and differs with another seed."""
    import anogan_guide as ag

    result = _run("00_data_prep", "-p", "dataset", "digits", "-p", "normal_class", "3",
                  "-p", "seed", "0", "--out", str(tmp_path / "a"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for seed, same in ((0, True), (1, False)):
        ag.save_split(ag.load_one_class("digits", 3, seed=seed), tmp_path / f"seed{seed}.json")
        here = (tmp_path / f"seed{seed}.json").read_bytes()
        assert (here == (tmp_path / "a" / "split.json").read_bytes()) is same, seed
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert (metrics["n_train"], metrics["n_val"], metrics["n_test"]) == (115, 13, 540)
    assert (tmp_path / "a" / "notebooks" / "00_data_prep.ipynb").is_file()
    for folder in ("model_saves", "train_img", "test_imgs"):
        assert (tmp_path / "a" / folder).is_dir()
    # the resolved parameters are recorded (the sweep compares them); no kernel transport warning
    assert metrics["parameters"] == {"00_data_prep": {
        "dataset": "digits", "normal_class": 3, "seed": 0, "run_dir": str(tmp_path / "a")}}
    # and the notebook's defaults beside them (a changed default re-runs a sweep's run)
    assert metrics["defaults"]["00_data_prep"]["val_fraction"] == 0.1
    assert "Kernel is running over TCP" not in result.stdout + result.stderr


def _progress_notebook(path: Path) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("run_dir: str = ''  # the run folder",
                                          metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell("from anogan_guide.runs import progress\n"
                                          "for _ in progress(range(3), desc='long step'):\n"
                                          "    pass\nprint('done')")]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path


def test_progress_bars_reach_the_terminal_unless_quiet(tmp_path, monkeypatch):
    notebook = _progress_notebook(tmp_path / "90_progress.ipynb")
    monkeypatch.delenv("ANOGAN_GUIDE_QUIET", raising=False)
    loud = _run(str(notebook), "--out", str(tmp_path / "r"))
    assert loud.returncode == 0, loud.stderr
    assert "long step: 100%" in loud.stderr and "3/3" in loud.stderr
    assert "Kernel is running over TCP" not in loud.stdout + loud.stderr
    executed = nbformat.read(tmp_path / "r" / "notebooks" / notebook.name, as_version=4)
    assert executed.cells[-1].outputs[0]["text"] == "done\n"  # the notebook keeps its outputs
    monkeypatch.setenv("ANOGAN_GUIDE_QUIET", "1")
    quiet = _run(str(notebook), "--out", str(tmp_path / "r"))
    assert quiet.returncode == 0 and "long step" not in quiet.stdout + quiet.stderr
    assert quiet.stdout.startswith("[anogan-guide] 90_progress.ipynb")  # its one-line header


@pytest.mark.slow
def test_resume_rescores_finished_training_with_a_new_score_time_parameter(tmp_path):
    """GradCon's grad_weight only weighs the score's terms: `-p resume true` after training
    finished re-scores without training again, with the notebook's grad_weight."""
    import numpy as np

    ci = str(REPO / "params" / "ci.yaml")
    first = _run("00_data_prep", "04_gradcon", "-f", ci, "--out", str(tmp_path))
    assert first.returncode == 0, first.stderr
    checkpoint = tmp_path / "model_saves" / "gradcon_last.pt"
    stamp = checkpoint.stat().st_mtime_ns
    again = _run("04_gradcon", "-f", ci, "-p", "resume", "true", "-p", "grad_weight", "0.5",
                 "--out", str(tmp_path))
    assert again.returncode == 0, again.stderr
    assert checkpoint.stat().st_mtime_ns == stamp  # no epoch trained
    entry = json.loads((tmp_path / "metrics.json").read_text())["methods"]["gradcon"]
    assert entry["params"]["grad_weight"] == 0.5 and entry["dev"] is not None
    # ci.yaml records the complexity correction: the score as scored is score_raw
    assert entry["params"]["complexity_correction"]["slope"] != 0
    with np.load(tmp_path / "scores" / "gradcon.npz") as saved:
        for part in ("val", "dev", "test"):
            np.testing.assert_allclose(saved[f"{part}/score_raw"], saved[f"{part}/mse"]
                                       + 0.5 * saved[f"{part}/l_grad"], rtol=1e-5, atol=1e-7)
