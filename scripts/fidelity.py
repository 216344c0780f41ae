"""Run the baselines' original code on a tiny random CLIP and write its figures to the fidelity fixture.

Usage (outside the test suite; needs local checkouts of the authors' repositories, never imported by the project)::

    python scripts/fidelity.py --originals /work/orig [--methods coop kgcoop ...] \
        [--out tests/networks/data/fidelity.json]

``--originals`` holds the repositories under their GitHub names: ``CoOp`` (KaiyangZhou/CoOp: zero-shot CLIP, CoOp,
CoCoOp), ``KgCoOp`` (htyao89/KgCoOp), ``multimodal-prompt-learning`` (muzairkhattak: IVLP, MaPLe), ``PromptSRC``
(muzairkhattak/PromptSRC), ``Tip-Adapter`` (gaopengcuhk/Tip-Adapter: its ``search_hp`` and Tip-Adapter-F's
``run_tip_adapter_F``), ``CLIP-Adapter`` (gaopengcuhk/CLIP-Adapter, run with CoOp's ``clip``), ``BiomedCoOp``
(HealthX-Lab/BiomedCoOp: its CLIP, CLIP-Adapter, ProGrad, LP++ and linear-probe trainers, with
:data:`scripts.fidelity_setup.BIOMEDCOOP_TEXTS` as its GPT descriptions, imported without its ``trainers/__init__``,
which imports every backbone's trainer). Each
method runs in its own process, with its repository first on ``sys.path`` (each ships its own ``clip`` package)
and small stand-ins for the pieces of Dassl the trainers import (registry, optimiser and scheduler builders:
nothing of Dassl computes a figure here). The trainer class of the original is used as it
is: its ``build_model`` builds the network from a config, its ``forward_backward`` computes the loss and the
gradients. What the stand-ins change: CUDA moves and float16 casts are no-ops (the check runs on CPU in float32),
the optimiser step does nothing (gradients are read before any update), Tip-Adapter's ``cls_acc`` is replaced by the
same percentage (theirs calls ``float`` on a one-element array, which NumPy 2 refuses), the weights come from
:func:`scripts.fidelity_setup.openai_state_dict` instead of a download, and PromptSRC's ImageNet template list is
replaced by :data:`scripts.fidelity_setup.TEMPLATES` (as is the template list of CoOp's zero-shot ensemble).

For each method the fixture keeps the logits of the eval-mode forward, the training loss of one
``forward_backward`` and the gradient of every trained tensor (whole when small, else norm, sum and 64 seeded
entries), keyed by the original's parameter names, plus the commit of the repository that produced them.
``tests/networks/test_fidelity.py`` compares this package's networks with those figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import types
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OUT = ROOT / "tests" / "networks" / "data" / "fidelity.json"

#: method -> (repository folder, trainer module, trainer class, config of the trainer)
ORIGINALS: dict[str, tuple[str, str, str, dict]] = {
    "zero-shot-template": ("CoOp", "trainers.zsclip", "ZeroshotCLIP", {}),
    "zero-shot-ensemble": ("CoOp", "trainers.zsclip", "ZeroshotCLIP2", {}),
    "tip-adapter": (
        "Tip-Adapter",
        "utils",
        "search_hp",
        {"search_hp": True, "search_scale": [7, 3], "search_step": [40, 10]},
    ),
    "tip-adapter-f": ("Tip-Adapter", "main", "run_tip_adapter_F", {}),
    "clip-adapter": ("CLIP-Adapter", "clip_adapter", "CLIP_Adapter", {}),
    "clip-adapter-biomedcoop": (
        "BiomedCoOp",
        "trainers.ClipAdapter.clip_adapter_clip",
        "ClipAdapter_CLIP",
        {"lr": 0.001, "alpha_ca": 0.5, "search_alpha_ca": False, "WARMUP_EPOCH": 1, "WARMUP_CONS_LR": 1e-5},
    ),
    "biomedcoop": (
        "BiomedCoOp",
        "trainers.BiomedCoOp.biomedcoop_clip",
        "BiomedCoOp_CLIP",
        {
            "BIOMEDCOOP": {
                "N_CTX": 4,
                "CTX_INIT": "a photo of a",
                "SCCM_LAMBDA": 0.75,
                "KDSP_LAMBDA": 2.0,
                "TAU": 1.5,
                "N_PROMPTS": 4,
            }
        },
    ),
    "lp++": ("BiomedCoOp", "trainers.LP2.linear_probe_p2_clip", "LinearProbe_P2_CLIP", {}),
    "linear-probe": (
        "BiomedCoOp",
        "trainers.LP.linear_probe_clip",
        "LinearProbe_CLIP",
        {"lr": 0.001, "train_epoch": 1, "shots": 2, "num_step": 2},
    ),
    "prograd": (
        "BiomedCoOp",
        "trainers.ProGrad.prograd_clip",
        "ProGrad_CLIP",
        {"PROGRAD": {"N_CTX": 4, "CTX_INIT": "a photo of a", "CSC": False, "NAME": "prograd", "T": 1.0, "LAMBDA": 1.0}},
    ),
    "coop": ("CoOp", "trainers.coop", "CoOp", {"COOP": {"N_CTX": 4, "CTX_INIT": "", "CSC": False}}),
    "coop-csc": ("CoOp", "trainers.coop", "CoOp", {"COOP": {"N_CTX": 4, "CTX_INIT": "", "CSC": True}}),
    "coop-init": ("CoOp", "trainers.coop", "CoOp", {"COOP": {"N_CTX": 4, "CTX_INIT": "a photo of a", "CSC": False}}),
    "coop-middle": (
        "CoOp",
        "trainers.coop",
        "CoOp",
        {"COOP": {"N_CTX": 4, "CTX_INIT": "", "CSC": False, "CLASS_TOKEN_POSITION": "middle"}},
    ),
    "coop-front": (
        "CoOp",
        "trainers.coop",
        "CoOp",
        {"COOP": {"N_CTX": 4, "CTX_INIT": "", "CSC": True, "CLASS_TOKEN_POSITION": "front"}},
    ),
    "cocoop": ("CoOp", "trainers.cocoop", "CoCoOp", {"COCOOP": {"N_CTX": 4, "CTX_INIT": "a photo of a"}}),
    "kgcoop": (
        "KgCoOp/KgCoOp",
        "trainers.kgcoop",
        "KgCoOp",
        {"COOP": {"N_CTX": 4, "CTX_INIT": "a photo of a", "CSC": False, "W": 8.0}, "COCOOP": {}},
    ),
    "ivlp": (
        "multimodal-prompt-learning",
        "trainers.independentVL",
        "IVLP",
        {
            "IVLP": {
                "N_CTX_TEXT": 2,
                "N_CTX_VISION": 2,
                "CTX_INIT": "a photo",
                "PROMPT_DEPTH_TEXT": 2,
                "PROMPT_DEPTH_VISION": 2,
            }
        },
    ),
    "maple": (
        "multimodal-prompt-learning",
        "trainers.maple",
        "MaPLe",
        {"MAPLE": {"N_CTX": 2, "CTX_INIT": "a photo of a", "PROMPT_DEPTH": 2}},
    ),
    "promptsrc": (
        "PromptSRC",
        "trainers.promptsrc",
        "PromptSRC",
        {
            "PROMPTSRC": {
                "N_CTX_TEXT": 4,
                "N_CTX_VISION": 4,
                "CTX_INIT": "a photo of a",
                "PROMPT_DEPTH_TEXT": 2,
                "PROMPT_DEPTH_VISION": 2,
                "TEXT_LOSS_WEIGHT": 25.0,
                "IMAGE_LOSS_WEIGHT": 10.0,
                "GPA_MEAN": 15,
                "GPA_STD": 1,
            }
        },
    ),
}


class Config(dict):
    """A nested dict read by attribute, as the originals read their yacs config."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError as error:
            raise AttributeError(name) from error


def as_config(value):
    return Config({k: as_config(v) for k, v in value.items()}) if isinstance(value, dict) else value


def install_dassl_stand_ins(torch) -> None:
    """Modules named like Dassl's with the few names the trainers import (none of them computes a figure)."""

    class Registry:
        def register(self, *args, **kwargs):
            return lambda cls: cls

    class Optimiser:
        def __init__(self, module):
            self.params = [p for p in module.parameters()] if hasattr(module, "parameters") else []

        def zero_grad(self):
            for p in self.params:
                p.grad = None

        def step(self):  # gradients are read before any update
            pass

    class Scheduler:
        def step(self):
            pass

    class TrainerX:
        def register_model(self, name="model", model=None, optim=None, sched=None):
            self.__dict__.setdefault("_models", {})[name] = model
            self.__dict__.setdefault("_optims", {})[name] = optim

        def model_backward_and_update(self, loss, names=None):
            for p in self.model.parameters():
                p.grad = None
            loss.backward()

        def update_lr(self, *args, **kwargs):
            pass

    modules = {
        "dassl": {},
        "dassl.engine": {"TRAINER_REGISTRY": Registry(), "TrainerX": TrainerX},
        "dassl.metrics": {"compute_accuracy": lambda output, label, topk=(1,): [torch.zeros(())]},
        "dassl.utils": {"load_pretrained_weights": lambda *a, **k: None, "load_checkpoint": lambda *a, **k: None},
        "dassl.optim": {
            "build_optimizer": lambda module, *a, **k: Optimiser(module),
            "build_lr_scheduler": lambda *a, **k: Scheduler(),
        },
    }
    for name, attrs in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module


#: the methods of BiomedCoOp's modified Dassl trainer that its ProGrad update runs (Dassl itself needs its whole
#: dependency set to import: these are compiled from the checkout's file and bound to the stand-in trainer)
DASSL_UPDATE_METHODS = ("prograd_backward_and_update", "model_zero_grad", "get_model_names", "detect_anomaly")


def bind_dassl_methods(trainer_class, trainer_file: Path, torch) -> None:
    """Bind :data:`DASSL_UPDATE_METHODS`, as the checkout's ``dassl/engine/trainer.py`` defines them, to
    ``trainer_class`` (the stand-in TrainerX keeps ``_models``/``_optims`` as Dassl's ``register_model`` does)."""
    import ast

    tree = ast.parse(trainer_file.read_text())
    namespace = {"torch": torch, "tolist_if_not": lambda x: x if isinstance(x, list) else [x]}
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name in DASSL_UPDATE_METHODS:
            exec(compile(ast.Module(body=[node], type_ignores=[]), str(trainer_file), "exec"), namespace)
            setattr(trainer_class, node.name, namespace[node.name])


def _tip_cache(clip: Any, state_file: str) -> tuple:
    """What both Tip-Adapter workers build with the original ``clip`` package: the model, the cache and search
    labels, the normalised cache keys and search features, the template's text weights and the one-hot values."""
    import torch

    from scripts.fidelity_setup import CLASS_NAMES, TEMPLATES, TIP_LABELS, images, tip_search_images

    model = clip.model.build_model(torch.load(state_file)).float().eval()
    cache_labels, search_labels = torch.tensor(TIP_LABELS["cache"]), torch.tensor(TIP_LABELS["search"])
    with torch.no_grad():
        keys = model.encode_image(images(len(cache_labels), "cache"))
        keys = keys / keys.norm(dim=-1, keepdim=True)
        features = model.encode_image(tip_search_images())
        features = features / features.norm(dim=-1, keepdim=True)
        texts = clip.tokenize([TEMPLATES[0].format(c.replace("_", " ")) for c in CLASS_NAMES])
        weights = model.encode_text(texts)
        weights = (weights / weights.norm(dim=-1, keepdim=True)).t()
    values = torch.nn.functional.one_hot(cache_labels, len(CLASS_NAMES)).float()
    return model, cache_labels, search_labels, keys, features, weights, values


def tip_adapter_worker(repo: Path, state_file: str, result_file: str) -> None:
    """Tip-Adapter: its ``search_hp`` on the features of its own CLIP (``clip.model.build_model``), then the logits
    of ``main.py``'s formula (inline there, so written out here) at the pair it chose."""
    import importlib

    import torch

    sys.path.insert(0, str(ROOT))

    torch.set_num_threads(1)
    torch.Tensor.half = lambda self, *a, **k: self  # build_model stores float16 weights: keep them float32
    torch.nn.Module.half = lambda self, *a, **k: self
    sys.path.insert(0, str(repo))
    clip = importlib.import_module("clip")
    utils = importlib.import_module("utils")
    # their cls_acc does float() of a one-element array, which NumPy 2 refuses: the same percentage, as a float
    utils.cls_acc = lambda output, target, topk=1: 100.0 * float((output.argmax(dim=1) == target).float().mean())
    model, cache_labels, search_labels, keys, features, weights, values = _tip_cache(clip, state_file)
    cfg = ORIGINALS["tip-adapter"][3]
    beta, alpha = utils.search_hp(cfg, keys.t(), values, features, search_labels, weights)
    affinity = features @ keys.t()
    logits = 100.0 * features @ weights + alpha * ((-1) * (beta - beta * affinity)).exp() @ values
    result = {"logits": logits.tolist(), "loss": None, "grads": {}, "shapes": {}, "alpha": alpha, "beta": beta}
    Path(result_file).write_text(json.dumps(result))


def tip_adapter_f_worker(repo: Path, state_file: str, result_file: str) -> None:
    """Tip-Adapter-F: ``main.py``'s ``run_tip_adapter_F`` itself for one epoch of one batch (the fixed images and
    labels) with the dtd config's ``init_alpha``/``init_beta``/``lr``; the loss, the gradient of the cache keys and
    their AdamW update are read as they pass (a recording AdamW subclass and cross-entropy wrapper: nothing of the
    computation changes)."""
    import importlib

    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(ROOT))
    from scripts.fidelity_setup import (
        LABELS,
        TIP_ADAPTER_F_SETTINGS,
        gradient_summary,
        images,
    )

    torch.set_num_threads(1)
    torch.Tensor.half = lambda self, *a, **k: self
    torch.nn.Module.half = lambda self, *a, **k: self
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    sys.path.insert(0, str(repo))
    clip = importlib.import_module("clip")
    utils = importlib.import_module("utils")
    utils.cls_acc = lambda output, target, topk=1: 100.0 * float((output.argmax(dim=1) == target).float().mean())
    # main.py imports its dataset package (which needs gdown) for loaders this check replaces by one fixed batch
    for name, attrs in (("datasets", {"build_dataset": None}), ("datasets.utils", {"build_data_loader": None})):
        sys.modules[name] = types.ModuleType(name)
        sys.modules[name].__dict__.update(attrs)
    main_module = importlib.import_module("main")
    main_module.cls_acc = utils.cls_acc
    recorded: dict = {"losses": [], "steps": []}
    cross_entropy = F.cross_entropy

    def recording_cross_entropy(*args, **kwargs):
        loss = cross_entropy(*args, **kwargs)
        recorded["losses"].append(float(loss))
        return loss

    class RecordingAdamW(torch.optim.AdamW):
        def step(self, closure=None):
            (param,) = self.param_groups[0]["params"]
            before, grad = param.detach().clone(), param.grad.detach().clone()
            out = super().step(closure)
            recorded["steps"].append((grad, param.detach() - before, dict(self.param_groups[0])))
            return out

    main_module.F.cross_entropy = recording_cross_entropy
    main_module.torch.optim.AdamW = RecordingAdamW
    model, cache_labels, search_labels, keys, features, weights, values = _tip_cache(clip, state_file)
    train_loader = [(images(len(LABELS)), torch.tensor(LABELS))]
    with tempfile.TemporaryDirectory() as cache_dir:
        cfg = {**ORIGINALS["tip-adapter"][3], **TIP_ADAPTER_F_SETTINGS, "train_epoch": 1, "cache_dir": cache_dir}
        cfg["shots"] = 2
        main_module.run_tip_adapter_F(
            cfg, keys.t(), values, features, search_labels, features, search_labels, weights, model, train_loader
        )
    (grad, update, group) = recorded["steps"][0]
    result = {
        "logits": None,
        "loss": recorded["losses"][0],
        "grads": {"adapter.weight": gradient_summary(grad, "adapter.weight")},
        "update_over_lr": gradient_summary(update / group["lr"], "adapter.weight"),
        "shapes": {"adapter.weight": list(grad.shape)},
        "optimizer": {k: group[k] for k in ("lr", "eps", "weight_decay", "betas", "amsgrad")},
    }
    Path(result_file).write_text(json.dumps(result))


def clip_adapter_biomedcoop_worker(repo: Path, state_file: str, result_file: str) -> None:
    """BiomedCoOp's CLIP-Adapter: its trainer's ``forward`` (the training loop of ``ClipAdapter_CLIP``) for one
    epoch of one batch, alpha 0.5 without search; its adapter set to the fixed trained values, the loss, logits and
    the adapter's gradients read as they pass (a recording SGD subclass and cross-entropy wrapper)."""
    import importlib

    import torch
    import torch.nn.functional as F

    sys.path.insert(0, str(ROOT))
    from scripts.fidelity_setup import (
        CLASS_NAMES,
        LABELS,
        MODEL_CONFIG,
        TEMPLATES,
        gradient_summary,
        images,
        trained_value,
    )

    torch.set_num_threads(1)
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    sys.path.insert(0, str(repo))
    package = types.ModuleType("trainers")  # its trainers/__init__ imports every backbone's trainer
    package.__path__ = [str(repo / "trainers")]
    sys.modules["trainers"] = package
    clip = importlib.import_module("clip.clip")
    module = importlib.import_module(ORIGINALS["clip-adapter-biomedcoop"][1])
    recorded: dict = {"calls": [], "steps": []}
    cross_entropy = F.cross_entropy

    def recording_cross_entropy(logits, target, *args, **kwargs):
        loss = cross_entropy(logits, target, *args, **kwargs)
        recorded["calls"].append((logits.detach().clone(), float(loss)))
        return loss

    class RecordingSGD(torch.optim.SGD):
        def step(self, closure=None):
            recorded["steps"].append(
                {n: p.grad.detach().clone() for n, p in zip(names, self.param_groups[0]["params"])}
            )
            return super().step(closure)

    custom_clip = module.CustomCLIP

    class FixedCustomCLIP(custom_clip):  # the adapter starts from the fixed trained values (theirs: random)
        def __init__(self, clip_model):
            super().__init__(clip_model)
            with torch.no_grad():
                for name, p in self.named_parameters():
                    if "adapter" in name:
                        p.copy_(trained_value(name, p.shape))

    module.CustomCLIP = FixedCustomCLIP
    # its cls_acc calls float() on a one-element array, which NumPy 2 refuses: the same percentage, as a float
    module.cls_acc = lambda output, target, topk=1: 100.0 * float((output.argmax(dim=1) == target).float().mean())
    module.F.cross_entropy = recording_cross_entropy
    module.torch.optim.SGD = RecordingSGD
    names = [f"adapter.{n}" for n, _ in module.Adapter(MODEL_CONFIG["embed_dim"], 4).named_parameters()]
    # its warm-up scheduler passes torch < 2.2's ``verbose`` positionally, which torch 2.2+ refuses; it only sets the
    # rate of the steps after the one read here: a stand-in that does nothing
    module.ConstantWarmupScheduler = lambda *a, **k: types.SimpleNamespace(step=lambda: None, get_last_lr=lambda: [0.0])
    model = clip.build_model(torch.load(state_file)).float().eval()
    with torch.no_grad():
        texts = clip.tokenize([TEMPLATES[0].format(c.replace("_", " ")) for c in CLASS_NAMES])
        weights = model.encode_text(texts)
        weights = (weights / weights.norm(dim=-1, keepdim=True)).t()
        features = model.encode_image(images(len(LABELS)))
        features = features / features.norm(dim=-1, keepdim=True)
    batch = [(images(len(LABELS)), torch.tensor(LABELS))]
    with tempfile.TemporaryDirectory() as cache_dir:
        cfg = {**ORIGINALS["clip-adapter-biomedcoop"][3], "train_epoch": 1, "cache_dir": cache_dir, "shots": 2}
        trainer = module.ClipAdapter_CLIP(cfg)
        trainer.forward(batch, batch, features, torch.tensor(LABELS), weights, model, CLASS_NAMES)
    logits, loss = recorded["calls"][0]
    grads = recorded["steps"][0]
    result = {
        "logits": logits.tolist(),
        "loss": loss,
        "grads": {name: gradient_summary(g, name) for name, g in grads.items()},
        "shapes": {name: list(g.shape) for name, g in grads.items()},
    }
    Path(result_file).write_text(json.dumps(result))


def lp_plus_plus_worker(repo: Path, state_file: str, result_file: str) -> None:
    """BiomedCoOp's LP++ (``trainers/LP2/linear_probe_p2_clip.py``): its ``compute_centroids`` and
    ``calculate_init_alpha`` on the tiny CLIP's features of Tip-Adapter's cache images (2 shots per class), then the
    logits of its inline formula (``classifier(f) + alpha * f @ text_weights``, bias set to zero) on other images."""
    import importlib

    import torch

    sys.path.insert(0, str(ROOT))
    from scripts.fidelity_setup import CLASS_NAMES, TEMPLATES, TIP_LABELS, gradient_summary, images, tip_search_images

    torch.set_num_threads(1)
    sys.path.insert(0, str(repo))
    package = types.ModuleType("trainers")  # its trainers/__init__ imports every backbone's trainer
    package.__path__ = [str(repo / "trainers")]
    sys.modules["trainers"] = package
    clip = importlib.import_module("clip.clip")
    utils = importlib.import_module("trainers.utils")
    # its one-hot labels are float16 (for its float16 features); float32 here, as the features (0/1 are exact)
    one_hot = utils.get_one_hot
    utils.get_one_hot = lambda y_s, num_classes: one_hot(y_s, num_classes).float()
    module = importlib.import_module("trainers.LP2.linear_probe_p2_clip")
    model = clip.build_model(torch.load(state_file)).float().eval()
    labels = torch.tensor(TIP_LABELS["cache"])
    shots = len(labels) // len(CLASS_NAMES)
    with torch.no_grad():
        features = model.encode_image(images(len(labels), "cache"))
        features = features / features.norm(dim=-1, keepdim=True)
        test = model.encode_image(tip_search_images())
        test = test / test.norm(dim=-1, keepdim=True)
        texts = clip.tokenize([TEMPLATES[0].format(c.replace("_", " ")) for c in CLASS_NAMES])
        weights = model.encode_text(texts)
        weights = (weights / weights.norm(dim=-1, keepdim=True)).t()
        centroids = module.compute_centroids(features.unsqueeze(0), labels.unsqueeze(0))[0]
        alpha = module.calculate_init_alpha(features, labels, shots, weights)
        logits = test @ centroids.t() + alpha.float() * (test @ weights)
    result = {
        "logits": logits.tolist(),
        "loss": None,
        "grads": {},
        "shapes": {},
        "centroids": gradient_summary(centroids, "centroids"),
        "alpha": float(alpha),
        "training": _lp_plus_plus_training(module, model, labels, weights, shots),
    }
    Path(result_file).write_text(json.dumps(result))


def _lp_plus_plus_training(module: Any, model: Any, labels: Any, weights: Any, shots: int) -> dict[str, Any]:
    """LP++'s ``forward`` as it is, for ``LP_PLUS_PLUS_EPOCHS`` full-batch epochs on the cache images (validation: the
    search images), with its classifier's bias started at zero (its ``nn.Linear`` draws it at random; ours is zero).
    Each epoch's training logits and loss are read as its ``F.cross_entropy`` receives them; also its step sizes."""
    import torch
    import torch.nn.functional as F

    from scripts.fidelity_setup import LP_PLUS_PLUS_EPOCHS, TIP_LABELS, images, tip_search_images

    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    epochs: list[dict[str, Any]] = []

    def cross_entropy(logits, target, *args, **kwargs):
        loss = F.cross_entropy(logits, target, *args, **kwargs)
        epochs.append({"logits": logits.detach().tolist(), "loss": float(loss)})
        return loss

    class ZeroBiasLinear(torch.nn.Linear):
        def reset_parameters(self):
            super().reset_parameters()
            torch.nn.init.zeros_(self.bias)

    module.F = types.SimpleNamespace(cross_entropy=cross_entropy)
    module.nn = types.SimpleNamespace(Linear=ZeroBiasLinear, Module=torch.nn.Module)
    train = [(images(len(labels), "cache"), labels)]
    val = [(tip_search_images(), torch.tensor(TIP_LABELS["search"]))]
    with torch.no_grad():
        test = model.encode_image(images())
        test = test / test.norm(dim=-1, keepdim=True)
    trainer = module.LinearProbe_P2_CLIP({"train_epoch": LP_PLUS_PLUS_EPOCHS, "shots": shots, "output_dir": "."})
    loss, _ = trainer.forward(train, val, test, torch.zeros(len(test), dtype=torch.long), weights, model, None)
    with torch.no_grad():
        features = model.encode_image(images(len(labels), "cache"))
        features = features / features.norm(dim=-1, keepdim=True)
    return {
        "epochs": LP_PLUS_PLUS_EPOCHS,
        "lr_w": float(module.calculate_lr_w(features)),
        "lr_alpha": float(module.calculate_lr_alpha(features, weights)),
        "losses": [e["loss"] for e in epochs],
        "last_logits": epochs[-1]["logits"],
        "loss": loss,
    }


def linear_probe_worker(repo: Path, state_file: str, result_file: str) -> None:
    """BiomedCoOp's linear probe (``trainers/LP/linear_probe_clip.py``): its ``forward`` as it is, on loaders of the
    fixed images (train: Tip-Adapter's cache images; validation: its search images, then a second run on other
    validation images whose accuracies differ between Cs; test: the fixed batch), so that its C search (seven values,
    then ``num_step`` halvings in log space) and its scikit-learn fits run unchanged. Each fit is read as it passes
    (a recording ``LogisticRegression`` subclass): its C, its weights and intercept, its decision values on the test
    features, its accuracy on the validation features (what its search compares), and (once) the features it was
    fitted on."""
    import importlib

    import numpy as np
    import torch

    sys.path.insert(0, str(ROOT))
    from scripts.fidelity_setup import PROBE_VALIDATION_LABELS, TIP_LABELS, gradient_summary, images, tip_search_images

    os.environ["MPLBACKEND"] = "Agg"  # it draws a loss figure (empty here): no display
    torch.set_num_threads(1)
    torch.Tensor.cuda = lambda self, *a, **k: self
    sys.path.insert(0, str(repo))
    package = types.ModuleType("trainers")  # its trainers/__init__ imports every backbone's trainer
    package.__path__ = [str(repo / "trainers")]
    sys.modules["trainers"] = package
    clip = importlib.import_module("clip.clip")
    module = importlib.import_module(ORIGINALS["linear-probe"][1])
    model = clip.build_model(torch.load(state_file)).float().eval()
    runs = {  # fixture key -> the validation images and labels of one run of its forward
        "fits": (tip_search_images(), TIP_LABELS["search"]),
        "probe_validation_fits": (images(len(PROBE_VALIDATION_LABELS), "probe-validation"), PROBE_VALIDATION_LABELS),
    }
    with torch.no_grad():
        test = model.encode_image(images())
        test = test / test.norm(dim=-1, keepdim=True)
    current: dict[str, Any] = {}
    features: list[list[float]] = []

    class RecordingLogisticRegression(module.LogisticRegression):
        def fit(self, X, y, sample_weight=None):
            out = super().fit(X, y, sample_weight)
            val_features, val_labels = current["val"]
            current["fits"].append(
                {
                    "C": float(self.C),
                    "n_iter": int(self.n_iter_.max()),
                    "coef": gradient_summary(torch.from_numpy(self.coef_), "coef"),
                    "intercept": self.intercept_.tolist(),
                    "test_logits": self.decision_function(test.numpy()).tolist(),
                    "val_accuracy": float(sum(self.predict(val_features) == val_labels) / len(val_labels)),
                }
            )
            features.append(gradient_summary(torch.from_numpy(X), "features"))
            return out

    module.LogisticRegression = RecordingLogisticRegression
    train = [(images(len(TIP_LABELS["cache"]), "cache"), torch.tensor(TIP_LABELS["cache"]))]
    result: dict[str, Any] = {"logits": None, "loss": None, "grads": {}, "shapes": {}}
    for key, (val_images, val_labels) in runs.items():
        with torch.no_grad():
            val_features = model.encode_image(val_images)
            val_features = (val_features / val_features.norm(dim=-1, keepdim=True)).numpy()
        current.update(val=(val_features, np.asarray(val_labels)), fits=[])
        val = [(val_images, torch.tensor(val_labels))]
        with tempfile.TemporaryDirectory() as figures:  # its loss figure is saved to the working folder
            here = os.getcwd()
            os.chdir(figures)
            try:
                trainer = module.LinearProbe_CLIP(ORIGINALS["linear-probe"][3])
                trainer.forward(train, val, test, torch.zeros(len(test), dtype=torch.long), None, model, None)
            finally:
                os.chdir(here)
        result[key] = current["fits"]
    assert all(f == features[0] for f in features), "every fit is on the same training features"
    result["features"] = features[0]
    Path(result_file).write_text(json.dumps(result))


def worker(method: str, repo: Path, state_file: str, result_file: str) -> None:
    """Run one original trainer on the fixed inputs; write its figures as JSON to ``result_file``."""
    import importlib

    import torch
    import torch.nn.functional  # noqa: F401  (imported before the casts are patched)

    sys.path.insert(0, str(ROOT))
    from scripts.fidelity_setup import (
        BIOMEDCOOP_TEXTS,
        CLASS_NAMES,
        FIDELITY_METHODS,
        LABELS,
        MODEL_CONFIG,
        TEMPLATES,
        gradient_summary,
        images,
        trained_value,
    )

    torch.set_num_threads(1)
    install_dassl_stand_ins(torch)
    # CPU, float32: CUDA moves and float16 casts become no-ops
    torch.Tensor.cuda = lambda self, *a, **k: self
    torch.Tensor.half = lambda self, *a, **k: self
    torch.nn.Module.cuda = lambda self, *a, **k: self
    torch.nn.Module.half = lambda self, *a, **k: self
    torch_to = torch.Tensor.to
    torch.Tensor.to = lambda self, *a, **k: torch_to(
        self, *("cpu" if isinstance(x, str) and x == "cuda" else x for x in a), **k
    )
    sys.path.insert(0, str(repo))
    if not (repo / "clip").is_dir():  # gaopengcuhk/CLIP-Adapter is one trainer file for CoOp's tree: CoOp's clip
        sys.path.insert(1, str(repo.parent / "CoOp"))
    if (repo / "trainers" / "prompt_templates.py").is_file():
        # BiomedCoOp's trainers/__init__ imports every trainer (BiomedCLIP, PubMedCLIP...): a bare package instead
        package = types.ModuleType("trainers")
        package.__path__ = [str(repo / "trainers")]
        sys.modules["trainers"] = package
        templates = importlib.import_module("trainers.prompt_templates")
        templates.BIOMEDCOOP_TEMPLATES = {n.replace("_", " "): v for n, v in BIOMEDCOOP_TEXTS.items()}
    clip_module = importlib.import_module("clip.clip")
    clip_module._MODELS["ViT-B/16"] = "fidelity://tiny"
    clip_module._download = lambda *a, **k: state_file
    folder, module_name, class_name, trainer_cfg = ORIGINALS[method]
    module = importlib.import_module(module_name)
    if hasattr(module, "IMAGENET_TEMPLATES"):
        module.IMAGENET_TEMPLATES = list(TEMPLATES)
    precision = {"PREC": "fp32", "CLASS_TOKEN_POSITION": "end"}
    cfg = as_config(
        {
            "INPUT": {"SIZE": (32, 32)},
            "MODEL": {"BACKBONE": {"NAME": "ViT-B/16"}, "INIT_WEIGHTS": ""},
            "DATASET": {"NAME": "ImageNet"},  # KgCoOp's hand-crafted template: "a photo of a {}."
            "OPTIM": {"MAX_EPOCH": 30},
            "TRAINER": {key: {**precision, **value} for key, value in trainer_cfg.items()},
        }
    )
    if method == "prograd":  # its zero-shot prompt is CUSTOM_TEMPLATES[dataset]: BUSI's is "a photo of a {}."
        cfg["DATASET"]["NAME"] = "BUSI"
    trainer_class = getattr(module, class_name)
    if method == "prograd":
        bind_dassl_methods(trainer_class, repo / "Dassl.pytorch" / "dassl" / "engine" / "trainer.py", torch)
    if hasattr(trainer_class, "templates"):  # CoOp's zero-shot ensemble: our templates instead of ImageNet's
        trainer_class.templates = list(TEMPLATES)
    trainer = trainer_class.__new__(trainer_class)
    trainer.cfg = cfg
    trainer.dm = types.SimpleNamespace(dataset=types.SimpleNamespace(classnames=list(CLASS_NAMES)))
    trainer.device = torch.device("cpu")
    trainer.build_model()
    if method == "clip-adapter":  # its Adapter's width is RN50's 1024, hard-coded: one of the tiny CLIP's 512 instead
        trainer.model.adapter = module.Adapter(MODEL_CONFIG["embed_dim"], 4)
    x, y = images(len(LABELS)), torch.tensor(FIDELITY_METHODS.get(method, {}).get("labels", LABELS))
    if not hasattr(trainer, "model"):  # zero-shot CLIP: inference only, nothing trains
        with torch.no_grad():
            logits = trainer.model_inference(x)
        result = {"logits": logits.tolist(), "loss": None, "grads": {}, "shapes": {}}
        Path(result_file).write_text(json.dumps(result))
        return
    model = trainer.model
    trained = {name: p for name, p in model.named_parameters() if p.requires_grad}
    with torch.no_grad():
        for name, p in trained.items():
            p.copy_(trained_value(name, p.shape))
    model.eval()
    with torch.no_grad():
        logits = model(x)
    logits = logits[0] if isinstance(logits, tuple) else logits
    model.train()
    trainer.batch_idx, trainer.num_batches = 0, 2  # not the last batch: no scheduler step, no GPA update
    summary = trainer.forward_backward({"img": x, "label": y})
    result = {
        "logits": logits.tolist(),
        "loss": float(summary["loss"] if "loss" in summary else summary["xe_loss"]),
        "guide_loss": float(summary["kl_loss"]) if "kl_loss" in summary else None,
        "grads": {name: gradient_summary(p.grad, name) for name, p in trained.items()},
        "shapes": {name: list(p.shape) for name, p in trained.items()},
    }
    Path(result_file).write_text(json.dumps(result))


def _rounded(value):
    """Floats to 9 significant digits (far below the 1e-4 compared), to keep the fixture small."""
    if isinstance(value, float):
        return float(f"{value:.9g}")
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def commit_of(repo: Path) -> str:
    try:
        out = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--originals", type=Path, help="folder holding the original repositories")
    parser.add_argument("--methods", nargs="+", default=list(ORIGINALS), choices=list(ORIGINALS))
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--repo", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--state", help=argparse.SUPPRESS)
    parser.add_argument("--result", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker == "clip-adapter-biomedcoop":
        clip_adapter_biomedcoop_worker(args.repo, args.state, args.result)
        return 0
    if args.worker == "linear-probe":
        linear_probe_worker(args.repo, args.state, args.result)
        return 0
    if args.worker == "lp++":
        lp_plus_plus_worker(args.repo, args.state, args.result)
        return 0
    if args.worker == "tip-adapter-f":
        tip_adapter_f_worker(args.repo, args.state, args.result)
        return 0
    if args.worker == "tip-adapter":
        tip_adapter_worker(args.repo, args.state, args.result)
        return 0
    if args.worker:
        worker(args.worker, args.repo, args.state, args.result)
        return 0
    if args.originals is None or not args.originals.is_dir():
        parser.error("--originals must be a folder holding the original repositories (CoOp, KgCoOp, ...).")
    import torch

    sys.path.insert(0, str(ROOT))
    from scripts.fidelity_setup import CLASS_NAMES, LABELS, MODEL_CONFIG, SEED, openai_state_dict

    fixture = json.loads(args.out.read_text()) if args.out.is_file() else {"methods": {}}
    failed: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        state_file = os.path.join(tmp, "tiny-clip.pt")
        torch.save(openai_state_dict(), state_file)
        for method in args.methods:
            repo = args.originals / ORIGINALS[method][0]
            result_file = os.path.join(tmp, f"{method}.json")
            command = [sys.executable, __file__, "--worker", method, "--repo", str(repo), "--state", state_file,
                       "--result", result_file]  # fmt: skip
            done = subprocess.run(command, capture_output=True, text=True, cwd=repo)
            if done.returncode != 0:
                print(f"{method}: the original code failed:\n{done.stderr[-3000:]}", file=sys.stderr)
                failed.append(method)
                continue
            record = json.loads(Path(result_file).read_text())
            repo_name = ORIGINALS[method][0].split("/")[0]
            record["original"] = {"repository": repo_name, "commit": commit_of(repo), "trainer": ORIGINALS[method][2]}
            fixture["methods"][method] = record
            loss = "none (nothing trains)" if record["loss"] is None else f"{record['loss']:.6f}"
            print(f"{method}: loss {loss} from {repo_name}@{record['original']['commit'][:10]}")
    fixture["setup"] = {"seed": SEED, "model": MODEL_CONFIG, "class_names": CLASS_NAMES, "labels": LABELS}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_suffix(".json.tmp")
    tmp_out.write_text(json.dumps(_rounded(fixture), sort_keys=True, separators=(",", ":")) + "\n")
    tmp_out.replace(args.out)
    print(f"wrote {args.out} ({args.out.stat().st_size // 1024} kB)")
    if failed:
        print(f"not updated (the original code failed): {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
