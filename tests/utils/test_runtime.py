"""Threads and DataLoader workers chosen from the machine and the device."""

from __future__ import annotations

import pytest
import torch

from monai_cilmp.utils.runtime import available_cores, configure_runtime, default_threads, default_workers


@pytest.mark.parametrize(
    "device, cores, threads, workers",
    [
        ("cpu", 1, 1, 0),
        ("cpu", 2, 1, 1),  # the development machine: one compute thread, one loader process
        ("cpu", 4, 3, 1),
        ("cpu", 16, 14, 2),
        ("cpu", 64, 60, 4),
        ("cuda", 2, 1, 1),
        ("cuda", 16, 4, 8),
        ("cuda:1", 4, 1, 3),
    ],
)
def test_defaults_follow_cores_and_device(device, cores, threads, workers, monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert default_workers(device, cores) == workers
    assert default_threads(device, cores) == threads
    assert default_threads(device, cores, workers=0) >= threads  # fewer workers leave more cores to compute


def test_passive_waiting_lets_every_core_compute(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("OMP_WAIT_POLICY", "passive")
    assert default_threads("cpu", 2) == 2 and default_workers("cpu", 2) == 1 and default_threads("cuda", 16) == 4
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert default_threads("cpu", 2) == 1


def test_processes_on_one_node_share_its_cores_and_omp_num_threads_wins(monkeypatch):
    from monai_cilmp.utils import runtime

    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(runtime, "available_cores", lambda: 16)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")  # torchrun --nproc-per-node 4: 4 cores each
    assert runtime.process_cores() == 4
    assert (default_threads("cpu"), default_workers("cpu")) == (default_threads("cpu", 4), default_workers("cpu", 4))
    assert default_threads("cpu") == 3 and default_workers("cpu") == 1
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")  # more processes than cores: one each
    assert runtime.process_cores() == 1 and default_threads("cpu") == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "2")  # the user's (or the launcher's) choice
    assert default_threads("cpu") == 2 and default_threads("cuda", 16) == 2
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert default_threads("cpu") == 1


def test_configure_runtime_sets_torch_threads_and_keeps_given_values():
    before = torch.get_num_threads()
    try:
        settings = configure_runtime("cpu", threads=2, workers=3)
        assert (settings.threads, settings.workers, torch.get_num_threads()) == (2, 3, 2)
        settings = configure_runtime("cpu")
        assert settings.workers == default_workers("cpu") and settings.threads == default_threads("cpu")
        assert torch.get_num_threads() == settings.threads and settings.device == torch.device("cpu")
        assert available_cores() >= 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without a GPU")
def test_a_missing_gpu_is_one_sentence():
    with pytest.raises(ValueError, match="has no usable GPU: use --device cpu"):
        configure_runtime("cuda")
    with pytest.raises(ValueError, match="Unknown device 'tpu0'"):
        configure_runtime("tpu0")


def test_bundle_defaults_come_from_the_machine():
    from monai.bundle import ConfigParser

    from monai_cilmp.cli._bundle import BUNDLE_DIR

    for name in ("train.json", "inference.json"):
        parser = ConfigParser()
        parser.read_config(str(BUNDLE_DIR / "configs" / name))
        parser["device"] = "cpu"
        assert parser.get_parsed_content("num_workers") == default_workers("cpu")
        assert parser.get_parsed_content("num_threads") == default_threads("cpu")
