"""`anogan-guide sweep --engine ray` on a real two-node Ray cluster started on this machine,
against `--engine local`; resuming after Ctrl-C or SIGTERM (on both engines); a second call
skipping what is finished; re-running what a changed parameter changes. One local sweep, stopped
and resumed, serves them all."""

import csv
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from anogan_guide import engines, evaluate
from anogan_guide.runs import Run, write_json

pytest.importorskip("ray", reason="--engine ray needs Ray (pinned in pyproject.toml)")
pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
CI = str(REPO / "params" / "ci.yaml")
RAY = str(Path(sys.executable).with_name("ray"))
TINY = ["--dataset", "digits", "-f", CI]


def _sweep(*args, **kw):
    return subprocess.run([sys.executable, "-m", "anogan_guide.cli", "sweep", *args],
                          capture_output=True, text=True, timeout=900, cwd=REPO, **kw)


def _free_port() -> int:
    with socket.socket() as s:  # the kernel's ephemeral range, above Ray's worker ports
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes_mentioning(text: str) -> list[int]:
    """Processes whose command line holds `text`, and all their descendants."""
    parents, found = {}, set()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        parents[int(entry.name)] = ppid
        if text in cmdline:
            found.add(int(entry.name))
    grew = True
    while grew:
        children = {pid for pid, ppid in parents.items() if ppid in found} - found
        found |= children
        grew = bool(children)
    return sorted(found - {os.getpid()})


def _stop_cluster(temp_dir: str) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in _processes_mentioning(temp_dir):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(2)


def _ray_start(*args: str, env: dict) -> None:
    """`ray start ARGS`; a failure raises with the end of Ray's own output (its reason)."""
    result = subprocess.run([RAY, "start", *args], capture_output=True, text=True, timeout=120,
                            env=env)
    if result.returncode:
        raise RuntimeError(f"ray start {' '.join(args[:2])} failed: "
                           f"{(result.stderr or result.stdout)[-1500:]}")


@pytest.fixture(scope="module")
def cluster():
    """A Ray head and a second node joining it, one CPU each, in their own temporary folder
    (short: Ray's socket paths must fit in 107 characters); stopped whatever happens. A start
    that fails (Ray's own start-up times out on a loaded machine) is tried once more, on a new
    port, after stopping what it left."""
    temp_dir = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    token = Path(temp_dir) / "auth_token"  # Ray's token authentication, with a token of its own
    token.write_text(secrets.token_hex(32))
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", **auth)
    patch = pytest.MonkeyPatch()
    for name, value in auth.items():  # for the sweeps, which join this cluster
        patch.setenv(name, value)
    try:
        for attempt in (1, 2):
            port = _free_port()
            address = f"127.0.0.1:{port}"
            try:
                _ray_start("--head", f"--port={port}",
                           "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}",
                           "--num-cpus=1", "--num-gpus=0", "--include-dashboard=false",
                           "--disable-usage-stats", env=env)
                _ray_start(f"--address={address}", "--node-ip-address=127.0.0.1",
                           "--num-cpus=1", "--num-gpus=0", env=env)
                break
            except (RuntimeError, subprocess.TimeoutExpired):
                _stop_cluster(temp_dir)
                if attempt == 2:
                    raise
        yield address
    finally:
        patch.undo()
        _stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _table(out: Path) -> dict:
    with open(out / "results.csv") as f:
        return {(r["class"], r["method"]): (r["auroc"], r["auprc"], r["f1"])
                for r in csv.DictReader(f)}


def _finished(folder: Path) -> bool:
    try:
        data = json.loads((folder / "metrics.json").read_text())
    except (OSError, ValueError):
        return False
    return "gradcon" in data.get("methods", {}) and "04_gradcon" in data.get("parameters", {})


@dataclass
class Resumed:
    """A sweep stopped by a signal after its first finished run, then run again to the end."""
    out: Path
    n: int
    returncode: int  # of the stopped sweep
    stderr: str  # of the stopped sweep
    left: list  # processes still naming the sweep's folder after it stopped
    done: list  # the runs finished when it stopped
    stamps: dict  # their metrics.json's times then
    again: subprocess.CompletedProcess  # the same command again


def _stop_and_resume(args: list, out: Path, n: int, sig: int) -> Resumed:
    """`sweep ARGS` (n runs) signalled with `sig` once a run has finished, then run again.
    As from a terminal: SIGINT handled (a shell's background job would inherit it ignored)."""
    folders = [out / "digits" / f"class{c}_seed0" for c in range(n)]
    sweep = subprocess.Popen([sys.executable, "-m", "anogan_guide.cli", "sweep", *args],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        deadline = time.monotonic() + 600
        while not any(_finished(f) for f in folders):
            assert sweep.poll() is None and time.monotonic() < deadline, "no run finished"
            time.sleep(0.5)
        sweep.send_signal(sig)
        _, stderr = sweep.communicate(timeout=120)
    finally:
        if sweep.poll() is None:
            sweep.kill()
    left = _processes_mentioning(str(out))
    done = [f for f in folders if _finished(f)]
    stamps = {f: (f / "metrics.json").stat().st_mtime_ns for f in done}
    return Resumed(out, n, sweep.returncode, stderr, left, done, stamps, _sweep(*args))


def _check_resumed(r: Resumed) -> None:
    assert r.returncode == 130, r.stderr
    assert "sweep interrupted" in r.stderr and "run the same command again" in r.stderr
    assert r.left == []  # the stopped runs stopped their processes
    assert not list(r.out.glob(".anogan-guide-stop-*"))  # the Ray engine's stop file is gone
    assert r.again.returncode == 0, r.again.stderr
    assert len(r.done) < r.n  # the signal stopped a run
    assert (f"{r.n} runs: {len(r.done)} skipped (finished with these parameters), 0 re-run "
            f"(made with other parameters), {r.n - len(r.done)} run") in r.again.stdout
    assert all(_finished(r.out / "digits" / f"class{c}_seed0") for c in range(r.n))
    assert r.stamps == {f: (f / "metrics.json").stat().st_mtime_ns for f in r.done}
    assert "Kernel is running over TCP" not in r.again.stdout + r.again.stderr


@pytest.fixture(scope="module")
def local_sweep(tmp_path_factory) -> Resumed:
    """The local engine's sweep of classes 0 and 1 (GANomaly and GradCon), one run at a time,
    stopped by SIGTERM (a kill, a batch system's time limit) while its second run goes, then
    resumed. Resuming restores every random state, so its results are those of a sweep never
    stopped: the folder serves the sweep's own checks and the Ray engine's comparison."""
    out = tmp_path_factory.mktemp("local") / "sw"
    args = [*TINY, "--classes", "0,1", "--methods", "ganomaly,gradcon", "--engine", "local",
            "--jobs", "1", "--out", str(out)]
    return _stop_and_resume(args, out, 2, signal.SIGTERM)


def test_a_local_sweep_stopped_by_sigterm_resumes_with_only_the_missing_runs(local_sweep):
    _check_resumed(local_sweep)


def test_a_ray_sweep_stopped_by_ctrl_c_resumes_and_gives_the_local_engines_results(
        cluster, local_sweep, tmp_path):
    """Three runs on the two-node cluster (two at a time), Ctrl-C (SIGINT) after the first
    finished, then the same command again: GradCon's figures equal the local engine's."""
    out = tmp_path / "sw"
    args = [*TINY, "--classes", "0-2", "--methods", "gradcon", "--engine", "ray",
            "--address", cluster, "--out", str(out)]
    resumed = _stop_and_resume(args, out, 3, signal.SIGINT)
    _check_resumed(resumed)
    ray_table, local_table = _table(out), _table(local_sweep.out)
    assert set(ray_table) == {(c, "gradcon") for c in "012"}
    assert {k: v for k, v in ray_table.items() if k[0] in "01"} == {
        k: v for k, v in local_table.items() if k[1] == "gradcon"}
    assert not list(out.glob(".anogan-guide-storage-*"))  # the storage check cleans up


def test_the_sweep_writes_results_and_a_second_call_skips(local_sweep):
    """The sweep's own check on tiny parameters (classes 0 and 1 of digits, seed 0, two methods;
    every notebook runs in CI's own run). It keeps CI's parameters, so it comes before the test
    that changes one; it re-scores class 0's GradCon with the same result, which the Ray test
    above has compared already."""
    out = local_sweep.out
    args = [*TINY, "--classes", "0,1", "--methods", "ganomaly,gradcon", "--engine", "local",
            "--jobs", "2", "--out", str(out)]
    rows = list(csv.DictReader(open(out / "results.csv")))
    assert {(r["class"], r["method"]) for r in rows} == {
        (c, m) for c in "01" for m in ("ganomaly", "gradcon")}
    assert "## AUROC" in (out / "results.md").read_text()
    metrics = [out / "digits" / f"class{c}_seed0" / "metrics.json" for c in (0, 1)]
    stamps = [p.stat().st_mtime_ns for p in metrics]
    second = _sweep(*args)
    assert second.returncode == 0, second.stderr
    assert "2 runs: 2 skipped" in second.stdout + second.stderr
    assert stamps == [p.stat().st_mtime_ns for p in metrics]  # nothing ran again
    assert evaluate.read_metrics(Run(metrics[0].parent))["normal_class"] == 0
    # an entry without development figures (made before them) runs again, but its finished
    # training is reloaded (`resume: true`), not repeated: the same checkpoint and AUROC
    data = evaluate.read_metrics(Run(metrics[0].parent))
    before = data["methods"]["gradcon"].pop("dev")
    write_json(metrics[0], data)
    checkpoint = Run(metrics[0].parent).checkpoint("gradcon", "last")
    trained = checkpoint.stat().st_mtime_ns
    third = _sweep(*args)
    assert third.returncode == 0, third.stderr
    assert "1 skipped" in third.stdout + third.stderr and checkpoint.stat().st_mtime_ns == trained
    again = evaluate.read_metrics(Run(metrics[0].parent))["methods"]["gradcon"]
    assert again["auroc"] == data["methods"]["gradcon"]["auroc"] and again["dev"] == before


def test_a_changed_parameter_reruns_only_what_it_changes(local_sweep, tmp_path):
    out = local_sweep.out
    scores = {m: [out / "digits" / f"class{c}_seed0" / "scores" / f"{m}.npz"
                  for c in (0, 1)] for m in ("ganomaly", "gradcon")}
    before = {m: [p.stat().st_mtime_ns for p in paths] for m, paths in scores.items()}
    changed = tmp_path / "ci-gradcon-3.yaml"
    changed.write_text(Path(CI).read_text().replace("04_gradcon: {epochs: 2,",
                                                    "04_gradcon: {epochs: 3,"))
    assert changed.read_text() != Path(CI).read_text()
    args = ["--dataset", "digits", "-f", str(changed), "--classes", "0,1",
            "--methods", "ganomaly,gradcon", "--jobs", "2", "--out", str(out)]
    result = _sweep(*args)
    assert result.returncode == 0, result.stderr
    assert "2 runs: 0 skipped (finished with these parameters), 2 re-run" in result.stdout
    after = {m: [p.stat().st_mtime_ns for p in paths] for m, paths in scores.items()}
    assert after["ganomaly"] == before["ganomaly"]  # GANomaly's results were kept
    assert all(a != b for a, b in zip(after["gradcon"], before["gradcon"], strict=True))
    for c in (0, 1):
        data = json.loads((out / "digits" / f"class{c}_seed0" / "metrics.json").read_text())
        assert data["parameters"]["04_gradcon"]["epochs"] == 3
        assert data["parameters"]["03_ganomaly"]["epochs"] == 2
    assert "2 runs: 2 skipped" in _sweep(*args).stdout


def test_a_folder_some_node_cannot_see_is_named_in_one_line(tmp_path, monkeypatch):
    """check_shared_storage with a stand-in for Ray whose second node has its own /tmp."""
    N2 = "2" * 56  # Ray's node ids: 28 bytes in hex

    class Remote:
        def __init__(self, fn):
            self.fn = fn

        def options(self, **kw):
            self.node = kw["scheduling_strategy"].node_id
            return self

        def remote(self, marker, token, node_id):
            if self.node == N2:  # that node's file system does not hold the driver's folder
                marker = str(tmp_path / "elsewhere" / Path(marker).name)
            return self.fn(marker, token, node_id)

    class FakeRay:
        remote = Remote

        @staticmethod
        def get(value, timeout=None):
            return value

    nodes = [{"NodeID": "1" * 56, "NodeManagerAddress": "10.0.0.1"},
             {"NodeID": N2, "NodeManagerAddress": "10.0.0.2"}]
    engines.check_shared_storage(FakeRay, tmp_path, nodes[:1])  # one node sees it: fine
    with pytest.raises(engines.EngineError, match=r"not storage every node sees: node "
                                                  r"10\.0\.0\.2 \(FileNotFoundError"):
        engines.check_shared_storage(FakeRay, tmp_path, nodes)
    assert not list(tmp_path.glob(".anogan-guide-storage-*"))


def test_a_ray_task_started_after_the_stop_file_returns_without_running(tmp_path):
    stop_file = tmp_path / ".anogan-guide-stop-x"
    stop_file.touch()
    task = engines.Task("class 0 seed 0", tmp_path / "run", ("--dataset", "digits"))
    assert engines._ray_run(task, 1, str(stop_file)) == engines.STOPPED
    assert not task.folder.exists()  # nothing was started
