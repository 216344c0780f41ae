"""SIGTERM and Ctrl-C end a training run with its DataLoader workers and leave it resumable."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from monai_cilmp.engines import StopOnSignal, Terminated, load_checkpoint
from tests.bundle.test_cilmp_bundle import _tiny_dataset

REPO = Path(__file__).resolve().parents[2]


def test_sigterm_raises_terminated_only_while_an_engine_runs():
    from ignite.engine import Engine, Events

    seen = []
    engine = Engine(lambda e, batch: seen.append(signal.getsignal(signal.SIGTERM)))
    StopOnSignal().attach(engine)
    before = signal.getsignal(signal.SIGTERM)
    engine.run([0], max_epochs=1)
    assert seen[0] is not before and signal.getsignal(signal.SIGTERM) is before

    stopping = Engine(lambda e, batch: os.kill(os.getpid(), signal.SIGTERM))
    StopOnSignal().attach(stopping)
    stopping.add_event_handler(Events.ITERATION_COMPLETED, lambda e: pytest.fail("SIGTERM did not stop the run"))
    with pytest.raises(Terminated) as stopped:
        stopping.run([0, 1], max_epochs=1)
    assert stopped.value.code == 143 and signal.getsignal(signal.SIGTERM) is before


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"  # a zombie has ended; only its exit status waits to be collected


def _children(pid: int) -> list[int]:
    listing = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in listing.split()]


def _train(root: Path, epochs: int, *extra: str) -> list[str]:
    data = root / "data" / "toy"
    command = [sys.executable, "-m", "monai_cilmp", "train", "--datalist", str(data / "datalist.json")]
    command += ["--knowledge", str(data / "knowledge.safetensors"), "--out", str(root / "run")]
    command += ["--backbone", "CILMP-Tiny", "--pretrained", "none", "--offline", "--epochs", str(epochs)]
    return [*command, "--batch-size", "1", "--lr", "0.05", "--workers", "2", "--seed", "3", *extra]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads child processes from /proc")
@pytest.mark.parametrize("how", ["sigterm", "ctrl-c"])
def test_a_stopped_run_leaves_no_process_and_resumes(tmp_path, how):
    _tiny_dataset(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "train.log", "w") as log:
        process = subprocess.Popen(
            _train(tmp_path, 4), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        last = tmp_path / "run" / "checkpoints" / "last.pt"
        deadline = time.monotonic() + 240
        while not last.exists() and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert process.poll() is None, (tmp_path / "train.log").read_text()[-2000:]
        workers = _children(process.pid)
        while len(workers) < 2 and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # between epochs, until the next loader's workers are up
            workers = _children(process.pid)
        assert len(workers) == 2 and process.poll() is None  # the DataLoader workers of epoch 2
        if how == "sigterm":
            process.send_signal(signal.SIGTERM)  # to the main process only, as `kill` and most supervisors do
        else:
            os.killpg(process.pid, signal.SIGINT)  # Ctrl-C in a terminal: the whole foreground process group
        code = process.wait(timeout=60)
    text = (tmp_path / "train.log").read_text()
    assert code in ((143,) if how == "sigterm" else (130, -signal.SIGINT, 1)), text[-2000:]
    assert not [pid for pid in workers if _alive(pid)]
    stopped_at = load_checkpoint(last)["engine"]["epoch"]
    assert 1 <= stopped_at < 4 and not (tmp_path / "run" / "checkpoints" / "final.pt").exists()
    if how == "sigterm":
        assert "stopped by SIGTERM" in text

        resumed = subprocess.run(_train(tmp_path, 4, "--resume"), env=env, capture_output=True, text=True, timeout=600)
        assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-2000:]
        assert load_checkpoint(tmp_path / "run" / "checkpoints" / "final.pt")["engine"]["epoch"] == 4
