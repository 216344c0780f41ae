"""The monai-cilmp command line."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from monai_cilmp.cli import main


def test_help_lists_commands(capsys):
    assert main([]) == 0
    assert "bench" in capsys.readouterr().out


def test_console_script_help():
    out = subprocess.run([sys.executable, "-m", "monai_cilmp", "--help"], capture_output=True, text=True, check=True)
    assert "usage: monai-cilmp" in out.stdout


def test_bench_reports_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    code = main(
        [
            "bench",
            "--backbone",
            "CILMP-Tiny",
            "-B",
            "2",
            "-C",
            "3",
            "-L",
            "5",
            "-D",
            "16",
            "--steps",
            "1",
            "--full-context",
            "--shared-prefix",
            "on",
            "--ablate",
            "shared_prefix",
            "compute_dtype",
            "--phases",
            "--engine",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    assert report["config"]["classes"] == 3
    assert report["config"]["shared_prefix_setting"] == "on"
    assert report["config"]["levers"] == {
        "truncate": True,
        "shared_prefix": True,
        "compute_dtype": False,
        "compile": False,
    }
    for key in ("train_images_per_s", "infer_images_per_s", "peak_memory_gb", "train_gflops", "train_step_cpu_s"):
        assert report["cilmp"][key] > 0
    assert 0 < report["utilisation"]["train"] < 1.5
    assert report["speedup_vs_full_context"]["train_flops"] > 1
    assert report["full_context"]["train_gflop_per_step"] > report["cilmp"]["train_gflop_per_step"]
    # the shared prompt start runs once: fewer FLOPs than without it; compute_dtype is off in fp32, not ablated
    assert report["without_shared_prefix"]["train_gflop_per_step"] > report["cilmp"]["train_gflop_per_step"]
    assert "without_compute_dtype" not in report and "vs_reference_cpu_figures" not in report
    phases = report["phases"]
    for phase in ("image_tower", "text_side", "knowledge_tokens", "optimiser", "text_tower"):
        assert phases[phase]["step_s"] > 0, phase
    assert phases["image_tower"]["gflop"] + phases["text_side"]["gflop"] < report["cilmp"]["train_gflop_per_step"]
    assert phases["text_tower"]["gflop"] < phases["text_side"]["gflop"]
    assert report["engine_in_memory"]["images_per_s"] > 0 and report["engine_in_memory"]["fraction_of_bench"] > 0


def test_predict_collects_images_but_not_hidden_files(tmp_path):
    from monai_cilmp.cli.predict import collect_images

    (tmp_path / "a.png").write_bytes(b"x")
    (tmp_path / ".lock").write_bytes(b"")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "b.png").write_bytes(b"x")
    (tmp_path / "metrics.json").write_text("{}")
    assert collect_images([str(tmp_path)]) == [str(tmp_path / "a.png")]


@pytest.mark.parametrize(
    "command", ["", "demo", "prepare", "knowledge", "train", "evaluate", "predict", "export", "compare", "bench"]
)
def test_help_imports_neither_torch_nor_monai(command):
    """``--help`` answers at once: no command imports torch, MONAI or open_clip to describe itself."""
    import subprocess
    import sys

    code = (
        "import sys\nfrom monai_cilmp.cli import main\n"
        f"try:\n    main([{command!r}, '--help'] if {command!r} else ['--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = sorted(m for m in ('torch', 'monai', 'open_clip') if m in sys.modules)\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "usage: monai-cilmp" in result.stdout


def test_random_weights_are_announced_loudly(capsys):
    from monai_cilmp.cli.train import warn_random_weights

    warn_random_weights("none", "CILMP-Tiny")
    assert "WARNING: --pretrained none trains on a backbone of RANDOM weights" in capsys.readouterr().err
    for pretrained, backbone in (("openai", "ViT-B-16"), ("openai", "hf-hub:org/model"), ("synthetic", "CILMP-Tiny")):
        warn_random_weights(pretrained, backbone)
    assert capsys.readouterr().err == ""


@pytest.mark.parametrize("command", ["export", "evaluate", "predict", "train"])
def test_help_says_each_default_once(command):
    from monai_cilmp.cli import build_parser

    parser = build_parser([command])
    text = " ".join(parser._subparsers._group_actions[0].choices[command].format_help().split())
    assert "(default: None)" not in text and "model.onnx) (default" not in text
    if command == "export":
        assert text.count("(default:") == 5 and "(default: RUN/models/model.ts or model.onnx)" in text
