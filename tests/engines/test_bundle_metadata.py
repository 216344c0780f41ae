"""A run's bundle metadata: verifies against MONAI's schema and describes the network's input and output."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monai.bundle import verify_metadata, verify_net_in_out

import monai_cilmp.networks
from monai_cilmp.engines.bundle_metadata import bundle_metadata, network_data_format
from tests.conftest import random_bank

SCHEMA = Path(__file__).resolve().parents[3] / "shared" / "schemas" / "meta_schema_20240725.json"


def _register_tiny_backbone(tmp_path: Path, image_size: int) -> str:
    """``CILMP-Tiny`` with another input size, known to open_clip under a name of its own."""
    import open_clip

    if image_size == 64:
        return "CILMP-Tiny"
    config = json.loads((Path(monai_cilmp.networks.__file__).parent / "model_configs" / "CILMP-Tiny.json").read_text())
    config["vision_cfg"]["image_size"] = image_size
    name = f"CILMP-Tiny-{image_size}px"
    (tmp_path / f"{name}.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / f"{name}.json")
    return name


@pytest.mark.parametrize("n_classes, image_size", [(2, 64), (3, 64), (8, 64), (3, 96)])
def test_metadata_of_any_class_count_and_image_size_verifies(tmp_path, n_classes, image_size):
    backbone = _register_tiny_backbone(tmp_path, image_size)
    classes = [f"class {chr(97 + i)} lesion" for i in range(n_classes)]
    knowledge = tmp_path / "knowledge.safetensors"
    random_bank(classes, lengths=tuple(5 + i % 3 for i in range(n_classes)), dim=16).save(knowledge)
    config = {
        "network_def": {
            "_target_": "monai_cilmp.networks.nets.CILMP",
            "class_names": classes,
            "knowledge": str(knowledge),
            "backbone": backbone,
            "pretrained": "none",
            "offline": True,
            "text_prompt_depth": 2,
            "vision_prompt_depth": 2,
        }
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    meta = bundle_metadata(classes, image_size=image_size)
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == n_classes
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [image_size, image_size]
    (tmp_path / "metadata.json").write_text(json.dumps(meta))
    verify_net_in_out(
        net_id="network_def",
        meta_file=str(tmp_path / "metadata.json"),
        config_file=str(tmp_path / "config.json"),
        device="cpu",
    )
    if SCHEMA.is_file():
        verify_metadata(meta_file=str(tmp_path / "metadata.json"), filepath=str(SCHEMA))


def test_a_wrong_class_count_fails_verification(tmp_path):
    """The check above can fail: metadata of 3 classes do not verify a 2-class network."""
    classes = ["round red lesion", "flat blue lesion"]
    random_bank(classes, lengths=(6, 9), dim=16).save(tmp_path / "k.safetensors")
    config = {
        "network_def": {
            "_target_": "monai_cilmp.networks.nets.CILMP",
            "class_names": classes,
            "knowledge": str(tmp_path / "k.safetensors"),
            "backbone": "CILMP-Tiny",
            "pretrained": "none",
            "offline": True,
            "text_prompt_depth": 1,
            "vision_prompt_depth": 1,
        }
    }
    (tmp_path / "config.json").write_text(json.dumps(config))
    (tmp_path / "metadata.json").write_text(json.dumps(bundle_metadata([*classes, "third"], image_size=64)))
    with pytest.raises(ValueError, match="output channel number"):
        verify_net_in_out(
            net_id="network_def",
            meta_file=str(tmp_path / "metadata.json"),
            config_file=str(tmp_path / "config.json"),
            device="cpu",
        )


def test_network_data_format_describes_probabilities_or_logits():
    probabilities = network_data_format(["a", "b"], 224, output="probabilities")["outputs"]["pred"]
    assert probabilities["type"] == "probabilities" and probabilities["value_range"] == [0, 1]
    logits = network_data_format(["a", "b"], 224)["outputs"]["pred"]
    assert logits["type"] == "logits" and logits["channel_def"] == {"0": "a", "1": "b"}


@pytest.mark.parametrize("shared_prefix", [None, True, False])
def test_run_metadata_records_the_device_and_the_shared_prompt_start(tmp_path, tiny_backbone, shared_prefix):
    """The run says which arithmetic it ran: by default the shared prompt start runs once only on CUDA, so a CPU run
    records it off; forced on, it records it on; the file still verifies."""
    from monai_cilmp.engines.bundle_metadata import RUN_METADATA, write_run_metadata
    from monai_cilmp.networks.nets import CILMP

    classes = ["class a", "class b"]
    net = CILMP(classes, random_bank(classes, dim=16), tiny_backbone, shared_prefix=shared_prefix, text_prompt_depth=2)
    write_run_metadata(tmp_path, net, {"dataset_name": "toy"})
    meta = json.loads((tmp_path / RUN_METADATA).read_text())
    assert meta["speed_levers"] == {"device": "cpu", "shared_prefix": shared_prefix is True}
    if SCHEMA.is_file():
        verify_metadata(meta_file=str(tmp_path / RUN_METADATA), filepath=str(SCHEMA))
