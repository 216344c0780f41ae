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
from monai_cilmp.utils.signals import process_signal_handlers
from tests.bundle.test_cilmp_bundle import _tiny_dataset

REPO = Path(__file__).resolve().parents[2]


HANDLED = (signal.SIGINT, signal.SIGTERM)


def test_a_library_call_installs_no_signal_handler(tmp_path):
    from ignite.engine import Events

    from monai_cilmp.engines import create_trainer
    from tests.engines.test_trainer import loaders, make_net, recipe

    train, val = loaders()
    before = {s: signal.getsignal(s) for s in HANDLED}
    trainer = create_trainer(make_net(), train, tmp_path, recipe(max_epochs=1), val_loader=val, progress=False)
    during = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: during.append({s: signal.getsignal(s) for s in HANDLED})
    )
    trainer.evaluator.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: during.append({s: signal.getsignal(s) for s in HANDLED})
    )
    trainer.run()
    assert len(during) > 2 and all(d == before for d in during)
    assert {s: signal.getsignal(s) for s in HANDLED} == before


def test_stop_on_signal_logs_where_the_run_stopped_and_lets_the_exception_go(caplog):
    from ignite.engine import Engine

    def step(engine, batch):
        if batch == 1:
            raise KeyboardInterrupt

    engine = Engine(step)
    StopOnSignal("tests.stopping", hint="resume it").attach(engine)
    with caplog.at_level("WARNING", logger="tests.stopping"), pytest.raises(KeyboardInterrupt):
        engine.run([0, 1, 2], max_epochs=1)
    assert "stopped by Ctrl-C in epoch 1, iteration 2; resume it" in caplog.text


def test_process_signal_handlers_unwind_once_and_are_put_back():
    before = {s: signal.getsignal(s) for s in HANDLED}
    with pytest.raises(Terminated) as stopped, process_signal_handlers():
        assert signal.getsignal(signal.SIGTERM) is not before[signal.SIGTERM]
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(5)
        pytest.fail("SIGTERM did not stop the block")
    assert stopped.value.code == 143
    # after a signal the process is stopping: a second one ends it at once, also after the block
    assert all(signal.getsignal(s) is not before[s] for s in HANDLED)
    for s, handler in before.items():
        signal.signal(s, handler)
    with process_signal_handlers():
        pass
    assert {s: signal.getsignal(s) for s in HANDLED} == before  # no signal: put back


# a command whose clean-up hangs after the first signal (as a DataLoader worker that does not end can)
HANGING_CLEAN_UP = """
import sys, time
from monai_cilmp.utils.signals import process_signal_handlers
with process_signal_handlers():
    try:
        print("ready", flush=True)
        time.sleep(60)
    finally:
        print("unwinding", flush=True)
        time.sleep(60)
"""


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_second_signal_ends_the_process_at_once(signum, code):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [sys.executable, "-c", HANGING_CLEAN_UP], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        assert process.stdout.readline().strip() == "ready"
        process.send_signal(signum)
        assert process.stdout.readline().strip() == "unwinding"  # the first one unwinds, into a hanging clean-up
        start = time.monotonic()
        process.send_signal(signum)
        assert process.wait(timeout=10) == code and time.monotonic() - start < 5
        assert f"{signal.Signals(signum).name} again: stopping at once (exit status {code})" in process.stderr.read()
    finally:
        process.kill()
        process.wait()


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


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="reads child processes from /proc")
def test_two_ctrl_c_end_a_training_command_quickly(tmp_path):
    _tiny_dataset(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    with open(tmp_path / "train.log", "w") as log:
        process = subprocess.Popen(
            _train(tmp_path, 100), env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            last = tmp_path / "run" / "checkpoints" / "last.pt"
            deadline = time.monotonic() + 240
            while not last.exists() and process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert process.poll() is None, (tmp_path / "train.log").read_text()[-2000:]
            workers = _children(process.pid)
            start = time.monotonic()
            process.send_signal(signal.SIGINT)
            time.sleep(0.2)
            process.send_signal(signal.SIGINT)
            code = process.wait(timeout=30)
            elapsed = time.monotonic() - start
        finally:
            os.killpg(process.pid, signal.SIGKILL) if process.poll() is None else None
    text = (tmp_path / "train.log").read_text()
    # 130: exited by the handlers; -SIGINT: the second one came while the interpreter was finalizing, after Python put
    # the default action back; a shell shows 130 for both
    assert code in (130, -signal.SIGINT) and elapsed < 15, text[-2000:]
    deadline = time.monotonic() + 30  # workers whose parent is gone exit by themselves (PyTorch's watchdog)
    while [pid for pid in workers if _alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in workers if _alive(pid)]
    assert load_checkpoint(last)["engine"]["epoch"] >= 1  # the last complete epoch, intact


def test_the_documented_exit_statuses_are_the_codes():
    text = " ".join((REPO / "docs" / "safety.md").read_text().split())
    assert f"exit status 130 after Ctrl-C (SIGINT) and {Terminated().code} after SIGTERM" in text
    assert 128 + signal.SIGINT == 130 and Terminated().code == 128 + signal.SIGTERM
