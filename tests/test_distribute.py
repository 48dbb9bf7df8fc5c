"""Tests of multi-worker training: two local workers (TF_CONFIG on loopback ports) run `aebonet pretrain`."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from aebonet_lib._engine import checkpoints, cli, devices, modelfiles
from aebonet_lib.data.loading import load_data
from aebonet_lib.errors import AebonetError

REPO = Path(__file__).resolve().parents[1]

# One worker: `aebonet pretrain --distribute multiworker --epochs argv[3]`, keeping its final weights in argv[1] (the
# non-chief's run folder is temporary and removed, so the test keeps a copy to compare). argv[4] is "run", "kill"
# (the worker dies at the end of the first epoch, after its checkpoint) or "resume" (--resume).
WORKER_SCRIPT = """
import sys
import numpy as np
from aebonet_lib._engine import cli
from aebonet_lib._engine import checkpoints
from aebonet_lib._engine import runner as training

weights, run, epochs, mode = sys.argv[1:5]
finish = training.finish_pretrain
checkpoint = checkpoints.EpochCheckpoint.on_epoch_end

def finish_and_keep(model, *args):
    np.savez(weights, *model.get_weights())
    return finish(model, *args)

def killed_after_the_first_epoch(self, epoch, logs=None):
    checkpoint(self, epoch, logs)
    raise SystemExit(3)

training.finish_pretrain = finish_and_keep
if mode == "kill":
    checkpoints.EpochCheckpoint.on_epoch_end = killed_after_the_first_epoch
sys.exit(cli.main(["pretrain", "--data", "phantom:60", "--size", "32", "--width", "0.125", "--preset", "cpu",
                   "--epochs", epochs, "--precision", "fp32", "--distribute", "multiworker", "--out", run]
                  + ["--resume"] * (mode == "resume")))
"""


def free_ports(count: int) -> list[int]:
    """Return `count` loopback ports free now (held together while picked, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def tf_config(ports: list[int], index: int) -> str:
    """Return the TF_CONFIG of worker `index` in a cluster of local workers on `ports`."""
    return json.dumps({"cluster": {"worker": [f"localhost:{port}" for port in ports]},
                       "task": {"type": "worker", "index": index}})


def start_worker(index: int, ports: list[int], tmp_path: Path, cache: Path, epochs: int = 1,
                 mode: str = "run") -> subprocess.Popen:
    """Start worker `index` on its own temporary folder, writing its output to tmp_path/worker{index}.log."""
    scratch = tmp_path / f"tmp{index}"
    scratch.mkdir(exist_ok=True)
    env = {**os.environ, "TF_CONFIG": tf_config(ports, index), "AEBONET_CACHE": str(cache), "TMPDIR": str(scratch),
           "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-c", textwrap.dedent(WORKER_SCRIPT), str(tmp_path / f"weights{index}.npz"),
               str(tmp_path / "run"), str(epochs), mode]
    with open(tmp_path / f"worker{index}.log", "w") as log:  # the worker keeps its own copy of the file
        return subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env=env)


def wait_all(workers: list[subprocess.Popen], timeout: float) -> list[int]:
    """Wait for every worker, killing them all when one outlives `timeout` seconds; return their exit codes."""
    try:
        return [worker.wait(timeout=timeout) for worker in workers]
    except subprocess.TimeoutExpired:
        for worker in workers:
            worker.kill()
        pytest.fail(f"multi-worker training took over {timeout} s (a worker waiting on the other?)")


def run_workers(tmp_path: Path, cache: Path, epochs: int, mode: str) -> tuple[list[int], list[str]]:
    """Run two local workers to their end; return their exit codes and logs."""
    ports = free_ports(2)
    workers = [start_worker(index, ports, tmp_path, cache, epochs, mode) for index in range(2)]
    codes = wait_all(workers, timeout=300)
    return codes, [(tmp_path / f"worker{i}.log").read_text() for i in range(2)]


def check_same_weights(tmp_path: Path) -> None:
    """Check that both workers ended with the run folder's weights, batch-norm statistics included."""
    model = modelfiles.load_model(tmp_path / "run" / "autoencoder.keras")[0]
    weights = [[array for _, array in sorted(np.load(tmp_path / f"weights{i}.npz").items(), key=arr_index)]
               for i in range(2)]
    assert len(weights[0]) == len(weights[1]) == len(model.weights)
    for variable, chief, other in zip(model.weights, *weights):
        np.testing.assert_array_equal(variable.numpy(), chief)  # the run folder holds the chief's weights
        np.testing.assert_array_equal(chief, other, err_msg=variable.path)  # synchronized batch norm: all equal
        assert np.isfinite(other).all()


def test_two_workers_end_with_the_same_weights_and_one_run_folder(tmp_path):
    cache = tmp_path / "cache"
    load_data("phantom:60", 32, cache_root=cache, progress=False)  # written once, before the workers read it
    codes, logs = run_workers(tmp_path, cache, epochs=1, mode="run")
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
    assert "wrote" in logs[0] and "worker 1 finished" in logs[1]
    run = tmp_path / "run"
    assert checkpoints.run_finished(run) and (run / "encoder.keras").is_file()
    assert len(read_history(run)) == 1
    check_same_weights(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["cache", "run", "tmp0", "tmp1"]
    assert not any((tmp_path / "tmp1").iterdir()), "the non-chief's temporary run folder was not removed"


def test_a_killed_multiworker_run_resumes_on_both_workers_from_the_chiefs_checkpoint(tmp_path):
    cache = tmp_path / "cache"
    load_data("phantom:60", 32, cache_root=cache, progress=False)
    codes, logs = run_workers(tmp_path, cache, epochs=2, mode="kill")
    assert codes == [3, 3], "\n".join(log[-3000:] for log in logs)
    run = tmp_path / "run"
    assert checkpoints.read_state(run)["epochs_done"] == 1 and not checkpoints.run_finished(run)
    first_epoch = read_history(run)
    codes, logs = run_workers(tmp_path, cache, epochs=2, mode="resume")
    assert codes == [0, 0], "\n".join(log[-3000:] for log in logs)
    history = read_history(run)
    assert len(history) == 2 and history[0] == first_epoch[0]
    check_same_weights(tmp_path)
    assert not any((tmp_path / "tmp1").iterdir()), "the non-chief's temporary run folder was not removed"


def arr_index(item: tuple[str, np.ndarray]) -> int:
    """Return the position of an array saved by np.savez (arr_0, arr_1, ...)."""
    return int(item[0].split("_")[1])


def read_history(run: Path) -> list[str]:
    """Return the epoch rows of a run's history.csv."""
    return (run / "history.csv").read_text().splitlines()[1:]


def test_multiworker_without_tf_config_is_refused_in_one_line(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(AebonetError, match="needs TF_CONFIG"):
        devices.get_strategy("multiworker")


def test_a_malformed_tf_config_is_refused(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", "{not json")
    with pytest.raises(AebonetError, match="TF_CONFIG: not valid JSON"):
        devices.is_chief("multiworker")


def test_the_chief_is_worker_0_unless_the_cluster_names_one(monkeypatch):
    monkeypatch.setenv("TF_CONFIG", tf_config([1, 2], 0))
    assert devices.is_chief("multiworker")
    monkeypatch.setenv("TF_CONFIG", tf_config([1, 2], 1))
    assert not devices.is_chief("multiworker")
    assert devices.is_chief("mirrored")
    monkeypatch.setenv("TF_CONFIG", json.dumps({"cluster": {"chief": ["a:1"], "worker": ["b:2"]},
                                                "task": {"type": "worker", "index": 0}}))
    assert not devices.is_chief("multiworker")


def test_a_non_chief_writes_a_temporary_folder_that_is_removed(monkeypatch, tmp_path):
    monkeypatch.setenv("TF_CONFIG", tf_config([1, 2], 1))
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", None)  # reread TMPDIR
    with devices.worker_run_dir(tmp_path / "run", "multiworker") as folder:
        assert folder != tmp_path / "run" and folder.parent.parent == tmp_path
        folder.mkdir()
        (folder / "config.json").write_text("{}")
    assert sorted(tmp_path.iterdir()) == []


def test_the_cli_refuses_multiworker_without_tf_config(monkeypatch, tmp_path, capsys):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    code = cli.main(["pretrain", "--out", str(tmp_path / "run"), "--distribute", "multiworker"])
    err = capsys.readouterr().err
    assert code == 2 and "needs TF_CONFIG" in err and len(err.strip().splitlines()) == 1


def test_a_non_chief_cannot_resume_a_run_it_cannot_see(monkeypatch, tmp_path):
    monkeypatch.setenv("TF_CONFIG", tf_config([1, 2], 1))
    with pytest.raises(AebonetError, match="--resume on worker 1: .* holds no run on this machine"):
        with devices.worker_run_dir(tmp_path / "run", "multiworker", resume=True):
            pass


def test_batch_norm_is_synchronized_only_with_several_replicas():
    from aebonet_lib import paper
    from aebonet_lib.config import get_config

    model = paper.build_autoencoder(get_config("cpu", image_size=32, width=0.125))
    norms = [layer for layer in devices.all_layers(model) if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and not any(layer.synchronized for layer in norms)

    class TwoReplicas:
        num_replicas_in_sync = 2

    devices.synchronize_batch_norm(model, TwoReplicas())
    assert all(layer.synchronized for layer in norms)
