"""Grad-CAM saliency maps on the patch tokens: finite maps of the image's size for CILMP and the baselines, for
open_clip and timm ViT towers, without changing what the network computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from monai_cilmp.explain import (
    TokenGradCAM,
    find_saliency_target,
    saliency_targets,
    save_saliency_overlay,
    unnormalise,
)
from monai_cilmp.networks import CILMP, CoOp, ZeroShotCLIP
from tests.conftest import random_bank

CLASSES = ["bright", "dark", "striped"]


@pytest.fixture(scope="module")
def backbone():
    from monai_cilmp.networks import load_backbone

    torch.manual_seed(0)
    return load_backbone("CILMP-Tiny", None)


def networks(backbone):
    torch.manual_seed(1)
    bank = random_bank(CLASSES, lengths=(5, 12, 7), dim=16)
    return {
        "cilmp": CILMP(CLASSES, bank, backbone, text_prompt_depth=2, vision_prompt_depth=2),
        "coop": CoOp(CLASSES, backbone, n_ctx=4),
        "zero-shot": ZeroShotCLIP(CLASSES, backbone),  # no trainable parameter: the gradient comes from the input
    }


@pytest.mark.parametrize("method", ["cilmp", "coop", "zero-shot"])
@pytest.mark.parametrize("weighting", ["hirescam", "gradcam"])
def test_maps_are_finite_and_of_the_image_size(backbone, method, weighting):
    net = networks(backbone)[method].eval()
    images = torch.randn(2, 3, net.image_size, net.image_size)
    with torch.no_grad():
        before = net(images)
    maps = TokenGradCAM(net, method=weighting)(images)
    assert maps.shape == (2, 1, net.image_size, net.image_size)
    assert torch.isfinite(maps).all() and maps.min() >= 0 and maps.max() <= 1
    assert maps.flatten(1).std(dim=1).min() > 0  # a map, not a constant
    with torch.no_grad():  # the hooks are gone and changed nothing
        assert torch.equal(net(images), before)


def test_class_index_selects_what_is_explained(backbone):
    net = networks(backbone)["cilmp"].eval()
    image = torch.randn(1, 3, net.image_size, net.image_size)
    cam = TokenGradCAM(net)
    maps = [cam(image, class_idx=c) for c in range(len(CLASSES))]
    assert not all(torch.allclose(maps[0], m) for m in maps[1:])


def test_identity_blocks_at_the_end_are_skipped():
    """Like the demo's partly trained backbone: the last blocks add nothing, so their patch tokens get no gradient;
    the map comes from the last block that still reads them."""
    from monai_cilmp.networks import load_backbone

    torch.manual_seed(0)
    backbone = load_backbone("CILMP-Tiny", None)
    blocks = backbone.model.visual.transformer.resblocks
    with torch.no_grad():
        for block in blocks[-3:]:
            for proj in (block.attn.out_proj, block.mlp.c_proj):
                proj.weight.zero_()
                proj.bias.zero_()
    net = CoOp(CLASSES, backbone, n_ctx=4).eval()
    cam = TokenGradCAM(net)
    assert cam.hooked.target.module is blocks[-4].ln_1
    assert saliency_targets(net.vision_tower)[-1].module is blocks[-1].ln_1
    maps = cam(torch.randn(2, 3, net.image_size, net.image_size))
    assert maps.flatten(1).max(dim=1).values.min() > 0


class TimmClassifier(nn.Module):
    """A classifier on a timm ViT image tower: another tower family, reached only through its modules."""

    def __init__(self):
        super().__init__()
        timm = pytest.importorskip("timm")
        self.vision_tower = timm.models.vision_transformer.VisionTransformer(
            img_size=32, patch_size=8, embed_dim=32, depth=2, num_heads=2, num_classes=0, reg_tokens=2
        )
        self.head = nn.Linear(32, 3)

    def forward(self, x):
        return self.head(self.vision_tower(x))


def test_timm_tower_family():
    torch.manual_seed(0)
    net = TimmClassifier().eval()
    target = find_saliency_target(net.vision_tower)
    assert target.prefix == 3 and target.grid == (4, 4)  # class token + 2 registers; 32 / 8 patches a side
    maps = TokenGradCAM(net)(torch.randn(2, 3, 32, 32))
    assert maps.shape == (2, 1, 32, 32) and torch.isfinite(maps).all() and maps.max() > 0


def test_map_is_grad_cam_of_the_patch_tokens():
    """The map before upsampling is Grad-CAM / HiResCAM computed by hand on the patch tokens (prefix tokens skipped,
    patches in row-major order): relu(sum_d mean_p(dS/dA_pd) * A_pd) and relu(sum_d dS/dA_pd * A_pd)."""
    torch.manual_seed(0)
    net = TimmClassifier().eval()
    target = find_saliency_target(net.vision_tower)
    x = torch.randn(1, 3, 32, 32)
    seen = {}

    def keep(_module, _inputs, output):
        output.retain_grad()
        seen["tokens"] = output

    handle = target.module.register_forward_hook(keep)
    net(x.clone().requires_grad_(True))[0, 2].backward()
    handle.remove()
    tokens, grads = seen["tokens"][0, 3:19].detach(), seen["tokens"].grad[0, 3:19]
    by_hand = {
        "gradcam": torch.relu((grads.mean(0) * tokens).sum(-1)).view(4, 4),
        "hirescam": torch.relu((grads * tokens).sum(-1)).view(4, 4),
    }
    for method, expected in by_hand.items():
        ours = TokenGradCAM(net, method=method).cam.compute_map(x.clone().requires_grad_(True), class_idx=2)
        torch.testing.assert_close(ours[0, 0], expected, rtol=1e-4, atol=1e-6)
        assert expected.std() > 0
    with pytest.raises(ValueError, match="hirescam|gradcam"):
        TokenGradCAM(net, method="nope")


def test_unknown_tower_is_explained():
    with pytest.raises(NotImplementedError, match="No patch tokens"):
        find_saliency_target(nn.Linear(2, 2))


def test_overlay_png(tmp_path):
    image = unnormalise(torch.zeros(3, 16, 16), mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    assert np.allclose(image, 0.5)
    saliency = np.linspace(0, 1, 256).reshape(16, 16)
    path = save_saliency_overlay(image, saliency, tmp_path / "o.png", title="x")
    assert path.read_bytes()[:4] == b"\x89PNG"


def test_map_back_to_the_image_file_geometry(tmp_path):
    """A 120 x 90 photo is resized (shortest side to 64) and centre-cropped for the network; the map comes back at
    90 x 120, zero where the crop cut the image, and as an 8-bit PNG."""
    from PIL import Image

    from monai_cilmp.explain import saliency_in_image_geometry, save_saliency_map
    from monai_cilmp.transforms import get_preset

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)).save(tmp_path / "wide.png")
    preprocessing = get_preset("dermoscopy").eval_transforms(keys="image", image_size=64)
    image = preprocessing({"image": str(tmp_path / "wide.png")})["image"]
    heat = np.ones((64, 64), dtype=np.float32)
    original = saliency_in_image_geometry(heat, image, preprocessing)
    assert original.shape == (90, 120)
    assert original[:, 60].min() > 0.99  # the centre was seen
    assert original[:, :5].max() < 0.01 and original[:, -5:].max() < 0.01  # the cropped sides were not
    path = save_saliency_map(original, tmp_path / "map.png")
    assert np.asarray(Image.open(path)).shape == (90, 120)
    # a step that cannot be undone gives no map rather than a wrong one
    image.applied_operations = [{"class": "SelectSlice", "orig_size": (9, 9, 9)}]
    assert saliency_in_image_geometry(heat, image, preprocessing) is None


def test_saliency_label_image_of_a_file(backbone, tmp_path):
    from PIL import Image

    from monai_cilmp.explain import saliency_for_file
    from monai_cilmp.transforms import get_preset

    net = networks(backbone)["cilmp"].eval()
    rng = np.random.default_rng(1)
    Image.fromarray(rng.integers(0, 255, (70, 100, 3), dtype=np.uint8)).save(tmp_path / "x.png")
    preprocessing = get_preset("dermoscopy").eval_transforms(
        keys="image", image_size=net.image_size, mean=net.image_mean, std=net.image_std
    )
    label = saliency_for_file(net, tmp_path / "x.png", preprocessing)
    assert label.shape == (70, 100) and label.dtype == np.uint8 and label.max() > 0
