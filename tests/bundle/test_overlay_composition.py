"""Every method overlay composes with ``multi_gpu_train.json`` and ``demo.json``, in either order.

Overlays own keys (the network, a recipe value, ``train#dataset`` of the methods that train on cached features);
``multi_gpu_train.json`` owns the samplers and the process-group steps of ``startup``; ``demo.json`` owns the
``startup#data`` step. Whatever the order, the distributed sampler and the process-group start survive.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from torch.utils.data import DistributedSampler, RandomSampler

from monai_cilmp.engines.distributed import ShardSampler
from monai_cilmp.networks.nets import list_methods
from tests.compare.conftest import make_tiny_data

CONFIGS = Path(__file__).resolve().parents[2] / "bundles" / "cilmp" / "configs"
METHODS = CONFIGS / "methods"
#: keys of train.json that belong to the run's structure: no method overlay may replace them
STRUCTURE = ("initialize", "run", "finalize", "startup", "train#dataloader", "train#sampler", "validate#sampler")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    return make_tiny_data(tmp_path_factory.mktemp("compose_data"), per_class=4)


@pytest.fixture(scope="module")
def process_group(tmp_path_factory):
    """A one-process gloo group, as ``torchrun`` with one process would start (the samplers need a rank)."""
    if torch.distributed.is_initialized():
        yield
        return
    store = tmp_path_factory.mktemp("dist") / "store"
    torch.distributed.init_process_group("gloo", init_method=f"file://{store}", rank=0, world_size=1)
    yield
    torch.distributed.destroy_process_group()


def _parser(configs: list[str], tiny_data, out) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / c) for c in configs])
    parser.update(
        {
            "datalist_file": tiny_data["datalist"],
            "knowledge_file": tiny_data["knowledge"],
            "output_dir": str(out),
            "backbone": "CILMP-Tiny",
            "pretrained": "none",
            "offline": True,
            "num_workers": 0,
            "device": "$torch.device('cpu')",
            "recipe#batch_size": 4,
        }
    )
    return parser


@pytest.mark.parametrize("method", list_methods())
def test_overlay_owns_no_structural_key(method):
    overlay = json.loads((METHODS / f"{method}.json").read_text())
    owned = [key for key in overlay if key in STRUCTURE or key.startswith(("startup#", "train#sampler#"))]
    assert not owned, f"{method}.json replaces {owned}: change a component instead"


ORDERS = {
    "method, multi_gpu": ["{m}", "multi_gpu_train.json"],
    "multi_gpu, method": ["multi_gpu_train.json", "{m}"],
    "method, demo": ["{m}", "demo.json"],
    "demo, method": ["demo.json", "{m}"],
    "demo, multi_gpu, method": ["demo.json", "multi_gpu_train.json", "{m}"],
    "method, multi_gpu, demo": ["{m}", "multi_gpu_train.json", "demo.json"],
}


#: one overlay of each kind in the fast tier (prompts, prompts + GPA, cached features, features fitted); all when slow
FAST = ("coop", "cilmp", "linear-probe", "tip-adapter-f")


@pytest.mark.parametrize("order", list(ORDERS))
@pytest.mark.parametrize(
    "method", [m if m in FAST else pytest.param(m, marks=pytest.mark.slow) for m in list_methods()]
)
def test_overlays_compose_in_any_order(method, order, tiny_data, tmp_path, process_group, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "0")
    configs = ["train.json"] + [c.format(m=f"methods/{method}.json") for c in ORDERS[order]]
    parser = _parser(configs, tiny_data, tmp_path)
    distributed, demo = "multi_gpu_train.json" in configs, "demo.json" in configs

    assert parser["method"] == method
    steps = parser["initialize"]
    assert steps == [f"@startup#{name}" for name in parser["startup"]]
    assert ("init_process_group" in str(parser["startup#process_group"])) == distributed
    assert (parser["startup#data"] == "$@demo#prepare") == demo
    assert any(key == "finalize" for key in parser.config) == distributed

    loader = parser.get_parsed_content("train#dataloader")
    assert isinstance(loader.sampler, DistributedSampler if distributed else RandomSampler)
    assert len(loader.dataset) == len(json.loads(Path(tiny_data["datalist"]).read_text())["training"])
    val_loader = parser.get_parsed_content("validate#dataloader")
    # validation is sharded without padding (every image counted once), not by a DistributedSampler
    assert isinstance(val_loader.sampler, ShardSampler) == distributed
    if distributed:  # the process-group step runs (here: the group exists already)
        assert parser.get_parsed_content("startup#process_group") is True
    assert type(parser.get_parsed_content("network")).__name__ == parser["network_def"]["_target_"].rsplit(".")[-1]


def test_overlays_with_imports_keep_train_json_imports():
    """A config's ``imports`` list replaces the one before it: an overlay that has one must keep train.json's."""
    base = json.loads((CONFIGS / "train.json").read_text())["imports"]
    for path in [*CONFIGS.glob("*.json"), *METHODS.glob("*.json")]:
        imports = json.loads(path.read_text()).get("imports")
        if imports is not None and path.name in ("demo.json", "multi_gpu_train.json"):
            assert set(base) <= set(imports), f"{path.name} drops {sorted(set(base) - set(imports))}"
