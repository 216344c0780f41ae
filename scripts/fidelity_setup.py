"""What both sides of the fidelity check share: a tiny random OpenAI-format CLIP, fixed inputs, fixed trained values.

``scripts/fidelity.py`` runs the authors' code of each baseline on these (from local checkouts of their repositories)
and writes the figures to ``tests/networks/data/fidelity.json``; ``tests/networks/test_fidelity.py`` runs this
package's networks on the very same weights, inputs and trained values and compares. Nothing of the original
repositories is in this file: only shapes, seeds and the names of their trained parameters (to set and read them).

The CLIP has ViT-B/16's widths (text 512, image 768, joint 512: MaPLe's code hard-codes 512 and 768) with three
layers per tower, a 32 x 32 input (2 x 2 patches of 16) and OpenAI's vocabulary and 77-token context. Every weight
is rounded to float16 and back, because OpenAI's ``build_model`` (which the originals call) stores the matrices in
float16 before they cast the model to float32; both sides then compute in float32 on the same values.
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from typing import Any

import torch

__all__ = [
    "BIOMEDCOOP_TEXTS",
    "CLASS_NAMES",
    "FIDELITY_METHODS",
    "LABELS",
    "MODEL_CONFIG",
    "TIP_ADAPTER_F_SETTINGS",
    "TIP_LABELS",
    "TEMPLATES",
    "gradient_summary",
    "images",
    "openai_state_dict",
    "tip_search_images",
    "trained_value",
]

#: the tiny CLIP, in open_clip's model-config format (QuickGELU, as OpenAI's weights).
MODEL_CONFIG: dict[str, Any] = {
    "embed_dim": 512,
    "quick_gelu": True,
    "vision_cfg": {"image_size": 32, "layers": 3, "width": 768, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 512, "heads": 8, "layers": 3},
}

#: class names with an underscore (read as a space by every method) and one of several tokens.
CLASS_NAMES = ["melanocytic_nevus", "melanoma", "basal cell carcinoma"]
LABELS = [0, 2, 1, 2]
#: Tip-Adapter: the labels of its cache images and of the images its alpha/beta search runs on
TIP_LABELS = {"cache": [0, 0, 1, 1, 2, 2], "search": [0, 0, 1, 1, 2, 2, 1, 0]}
#: the linear probe's second C search: the labels of its validation images (``images(9, "probe-validation")``), on
#: which the accuracies differ between Cs, so that both branches of its halving step are taken
PROBE_VALIDATION_LABELS = [0, 1, 2, 0, 1, 2, 0, 1, 2]
#: LP++'s full-batch epochs run on both sides: its alpha moves every 10th epoch (twice here)
LP_PLUS_PLUS_EPOCHS = 25
#: Tip-Adapter-F's training settings, as the authors' dtd config (``configs/dtd.yaml``)
TIP_ADAPTER_F_SETTINGS = {"init_alpha": 2.0, "init_beta": 1.0, "lr": 0.001}
#: the template ensemble of PromptSRC's frozen text target on both sides (the original's ImageNet list is replaced).
TEMPLATES = ["a photo of a {}.", "a dermoscopy image of {}.", "{}, a skin lesion."]
SEED = 20260501
#: BiomedCoOp's description prompts (its GPT texts replaced): four per class, one an outlier for its pruning
BIOMEDCOOP_TEXTS = {
    name: [
        f"a dermoscopy image of {name.replace('_', ' ')}.",
        f"{name.replace('_', ' ')} with an irregular border.",
        f"a close-up of {name.replace('_', ' ')} on the skin.",
        "an unrelated sentence about the weather.",
    ]
    for name in CLASS_NAMES
}


def _generator(key: str) -> torch.Generator:
    return torch.Generator().manual_seed(SEED + zlib.crc32(key.encode()))


def openai_state_dict() -> dict[str, torch.Tensor]:
    """The tiny CLIP's weights under OpenAI's names, seeded, every value exactly representable in float16."""
    vision, text = MODEL_CONFIG["vision_cfg"], MODEL_CONFIG["text_cfg"]
    wv, wt, embed = vision["width"], text["width"], MODEL_CONFIG["embed_dim"]
    grid = vision["image_size"] // vision["patch_size"]
    shapes: dict[str, tuple[int, ...]] = {
        "visual.class_embedding": (wv,),
        "visual.positional_embedding": (grid * grid + 1, wv),
        "visual.conv1.weight": (wv, 3, vision["patch_size"], vision["patch_size"]),
        "visual.ln_pre.weight": (wv,),
        "visual.ln_pre.bias": (wv,),
        "visual.ln_post.weight": (wv,),
        "visual.ln_post.bias": (wv,),
        "visual.proj": (wv, embed),
        "positional_embedding": (text["context_length"], wt),
        "text_projection": (wt, embed),
        "token_embedding.weight": (text["vocab_size"], wt),
        "ln_final.weight": (wt,),
        "ln_final.bias": (wt,),
    }
    for prefix, width, layers in (("visual.transformer", wv, vision["layers"]), ("transformer", wt, text["layers"])):
        for i in range(layers):
            block = f"{prefix}.resblocks.{i}"
            shapes.update(
                {
                    f"{block}.attn.in_proj_weight": (3 * width, width),
                    f"{block}.attn.in_proj_bias": (3 * width,),
                    f"{block}.attn.out_proj.weight": (width, width),
                    f"{block}.attn.out_proj.bias": (width,),
                    f"{block}.ln_1.weight": (width,),
                    f"{block}.ln_1.bias": (width,),
                    f"{block}.mlp.c_fc.weight": (4 * width, width),
                    f"{block}.mlp.c_fc.bias": (4 * width,),
                    f"{block}.mlp.c_proj.weight": (width, 4 * width),
                    f"{block}.mlp.c_proj.bias": (width,),
                    f"{block}.ln_2.weight": (width,),
                    f"{block}.ln_2.bias": (width,),
                }
            )
    state = {}
    for name, shape in shapes.items():
        g = _generator(name)
        if name.endswith(".weight") and len(shape) == 1:  # layer-norm gains near one
            value = 1.0 + 0.1 * torch.randn(shape, generator=g)
        elif name.endswith("bias"):
            value = 0.02 * torch.randn(shape, generator=g)
        else:  # scaled so that activations stay of order one through the towers
            fan_in = shape[-1] if len(shape) > 1 else shape[0]
            if name == "visual.conv1.weight":
                fan_in = 3 * vision["patch_size"] ** 2
            value = torch.randn(shape, generator=g) * (fan_in**-0.5 if len(shape) > 1 else 0.5)
        state[name] = value.half().float()
    state["logit_scale"] = torch.tensor(4.6052).half().float()  # exp = 100.0 -ish, as a trained CLIP's
    return state


def images(batch: int = 4, key: str = "images") -> torch.Tensor:
    """Fixed normalised images ``(batch, 3, 32, 32)`` (another ``key``: other images)."""
    return torch.randn(batch, 3, 32, 32, generator=_generator(key))


def tip_search_images() -> torch.Tensor:
    """Tip-Adapter's search images: its cache images (the cache then decides, so the search has a best pair to find)
    and two others."""
    return torch.cat([images(len(TIP_LABELS["cache"]), "cache"), images(2, "search")])


def trained_value(key: str, shape: tuple[int, ...] | torch.Size, std: float = 0.05) -> torch.Tensor:
    """The value a trained tensor is set to on both sides, seeded by ``key`` (the original's parameter name)."""
    return std * torch.randn(tuple(shape), generator=_generator(key))


def gradient_summary(grad: torch.Tensor, key: str, full_up_to: int = 256, samples: int = 64) -> list[float]:
    """A gradient as figures for the fixture: all of it when small, else its norm, sum and ``samples`` seeded
    entries."""
    flat = grad.detach().double().flatten()
    if flat.numel() <= full_up_to:
        return flat.tolist()
    index = torch.randperm(flat.numel(), generator=_generator(key))[:samples]
    return [flat.norm().item(), flat.sum().item(), *flat[index].tolist()]


#: per checked method: our registry name and keywords, and each original trained tensor's name -> ours
#: (``(our parameter, index along its first axis or None)``).
FIDELITY_METHODS: dict[str, Mapping[str, Any]] = {
    "zero-shot-template": {"ours": ("zero-shot-template", {}), "params": {}},
    "zero-shot-ensemble": {"ours": ("zero-shot-ensemble", {"templates": TEMPLATES}), "params": {}},
    "biomedcoop": {
        "ours": (
            "biomedcoop",
            {"prompts": BIOMEDCOOP_TEXTS, "sccm_weight": 0.75, "kdsp_weight": 2.0, "tau": 1.5},
        ),
        "params": {"prompt_learner.ctx": ("ctx", None)},
    },
    "clip-adapter": {
        "ours": ("clip-adapter", {"template": TEMPLATES[0]}),
        "params": {
            "adapter.fc.0.weight": ("adapter.0.weight", None),
            "adapter.fc.2.weight": ("adapter.2.weight", None),
        },
    },
    "clip-adapter-biomedcoop": {
        "ours": ("clip-adapter", {"template": TEMPLATES[0], "ratio": 0.5, "renormalize": False}),
        "params": {
            "adapter.fc.0.weight": ("adapter.0.weight", None),
            "adapter.fc.2.weight": ("adapter.2.weight", None),
        },
    },
    "prograd": {
        "ours": ("prograd", {"n_ctx": 4, "ctx_init": "a photo of a", "template": TEMPLATES[0]}),
        "params": {"prompt_learner.ctx": ("ctx", None)},
        "projected": True,  # the gradient compared is the cross-entropy's after the projection off the guide's
        # labels against zero-shot CLIP's view, so that the two gradients conflict and the projection runs
        "labels": [2, 2, 2, 2],
    },
    "coop": {
        "ours": ("coop", {"n_ctx": 4, "ctx_init": None}),
        "params": {"prompt_learner.ctx": ("ctx", None)},
    },
    "coop-csc": {
        "ours": ("coop", {"n_ctx": 4, "ctx_init": None, "class_specific": True}),
        "params": {"prompt_learner.ctx": ("ctx", None)},
    },
    "coop-init": {
        "ours": ("coop", {"n_ctx": 4, "ctx_init": "a photo of a"}),
        "params": {"prompt_learner.ctx": ("ctx", None)},
    },
    "coop-middle": {
        "ours": ("coop", {"n_ctx": 4, "ctx_init": None, "class_token_position": "middle"}),
        "params": {"prompt_learner.ctx": ("ctx", None)},
    },
    "coop-front": {
        "ours": ("coop", {"n_ctx": 4, "ctx_init": None, "class_specific": True, "class_token_position": "front"}),
        "params": {"prompt_learner.ctx": ("ctx", None)},
    },
    "cocoop": {
        "ours": ("cocoop", {}),
        "params": {
            "prompt_learner.ctx": ("ctx", None),
            "prompt_learner.meta_net.linear1.weight": ("meta_net.0.weight", None),
            "prompt_learner.meta_net.linear1.bias": ("meta_net.0.bias", None),
            "prompt_learner.meta_net.linear2.weight": ("meta_net.2.weight", None),
            "prompt_learner.meta_net.linear2.bias": ("meta_net.2.bias", None),
        },
    },
    "kgcoop": {
        "ours": ("kgcoop", {}),
        "params": {"prompt_learner.ctx": ("ctx", None)},
    },
    "ivlp": {
        "ours": (
            "ivlp",
            {"n_ctx": 2, "ctx_init": "a photo", "text_prompt_depth": 2, "vision_prompt_depth": 2, "n_ctx_vision": 2},
        ),
        "params": {
            "prompt_learner.ctx": ("text_prompts", 0),
            "text_encoder.transformer.resblocks.1.VPT_shallow": ("text_prompts", 1),
            "image_encoder.VPT": ("vision_prompts", 0),
            "image_encoder.transformer.resblocks.1.VPT_shallow": ("vision_prompts", 1),
        },
    },
    "maple": {
        "ours": ("maple", {"n_ctx": 2, "ctx_init": "a photo of a", "prompt_depth": 2}),
        "params": {
            "prompt_learner.ctx": ("text_prompts", 0),
            "prompt_learner.compound_prompts_text.0": ("text_prompts", 1),
            "prompt_learner.proj.weight": ("coupling.0.weight", None),
            "prompt_learner.proj.bias": ("coupling.0.bias", None),
            "prompt_learner.compound_prompt_projections.0.weight": ("coupling.1.weight", None),
            "prompt_learner.compound_prompt_projections.0.bias": ("coupling.1.bias", None),
        },
    },
    "promptsrc": {
        "ours": (
            "promptsrc",
            {
                "n_ctx": 4,
                "ctx_init": "a photo of a",
                "text_prompt_depth": 2,
                "vision_prompt_depth": 2,
                "n_ctx_vision": 4,
                "templates": TEMPLATES,
            },
        ),
        "params": {
            "prompt_learner.ctx": ("text_prompts", 0),
            "text_encoder.transformer.resblocks.1.VPT_shallow": ("text_prompts", 1),
            "image_encoder.VPT": ("vision_prompts", 0),
            "image_encoder.transformer.resblocks.1.VPT_shallow": ("vision_prompts", 1),
        },
    },
}
