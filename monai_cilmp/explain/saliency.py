"""Where in the image the score came from: gradient-weighted activation maps of a ViT image tower's patch tokens,
computed by MONAI's ``GradCAM`` machinery.

Class activation maps weigh a spatial activation map by the gradient of the class score and keep the positive part.
A ViT has no spatial map, but its patch tokens are one: at the *output of a block's first normalisation* (the tokens
that block's attention reads; the usual CAM target for ViTs) the tokens of the ``gh x gw`` patch grid are reshaped to
a ``(width, gh, gw)`` map. The towers are not modified: a forward hook on that normalisation routes the patch tokens
through an identity module holding the grid shape; :class:`monai.visualize.GradCAM` (or its element-wise variant,
HiResCAM, the default: see :class:`SaliencyMethod`) hooks that module, computes the map, upsamples it to the
network's input size and scales it to ``[0, 1]``. An all-zero map means no patch token raised the score there.

Which module is the target and where the patch tokens sit is found per tower family (:func:`saliency_targets`):
open_clip's ``VisionTransformer`` (class token, then patches, then any visual prompts) and timm's
``VisionTransformer`` (``num_prefix_tokens`` prefix tokens, then patches). A tower of another kind can say it
itself with a ``saliency_target()`` method returning a :class:`SaliencyTarget`. Blocks that are exact identities
(whose patch tokens no score depends on) are skipped: the map comes from the last block that reads them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.utils import StrEnum, look_up_option
from torch import nn

from monai_cilmp.utils.files import atomic_write

__all__ = [
    "SaliencyMethod",
    "SaliencyTarget",
    "TokenGradCAM",
    "find_saliency_target",
    "last_reading_target",
    "saliency_targets",
    "save_saliency_overlay",
    "unnormalise",
]


@dataclass
class SaliencyTarget:
    """Where a ViT's patch tokens can be read.

    Attributes:
        module: the module whose *output* holds the token sequence (e.g. the last block's first LayerNorm).
        prefix: number of tokens before the patch tokens (class and register tokens).
        grid: ``(gh, gw)`` patch grid; the patch tokens are ``prefix .. prefix + gh * gw`` in row-major order.
    """

    module: nn.Module
    prefix: int
    grid: tuple[int, int]


def _grid(size) -> tuple[int, int]:
    return (int(size[0]), int(size[1])) if isinstance(size, (tuple, list)) else (int(size), int(size))


def _open_clip_targets(module: nn.Module) -> list[SaliencyTarget]:
    blocks = getattr(getattr(module, "transformer", None), "resblocks", None)
    if hasattr(module, "conv1") and blocks is not None and len(blocks) and all(hasattr(b, "ln_1") for b in blocks):
        prefix = 1 if getattr(module, "class_embedding", None) is not None else 0
        return [SaliencyTarget(b.ln_1, prefix, _grid(module.grid_size)) for b in blocks]
    return []


def _timm_targets(module: nn.Module) -> list[SaliencyTarget]:
    blocks, embed = getattr(module, "blocks", None), getattr(module, "patch_embed", None)
    if blocks is not None and embed is not None and len(blocks) and all(hasattr(b, "norm1") for b in blocks):
        prefix, grid = int(getattr(module, "num_prefix_tokens", 1)), _grid(embed.grid_size)
        return [SaliencyTarget(b.norm1, prefix, grid) for b in blocks]
    return []


# tower families, tried in order on every sub-module of a vision tower: (name, finder of one target per block)
_FAMILIES = (("open_clip VisionTransformer", _open_clip_targets), ("timm VisionTransformer", _timm_targets))


def saliency_targets(tower: nn.Module) -> list[SaliencyTarget]:
    """One patch-token target per transformer block of a vision tower, first block first.

    A tower with a ``saliency_target()`` method gives its own (single) target.

    Raises:
        NotImplementedError: no known ViT inside the tower, and it has no ``saliency_target()``.
    """
    own = getattr(tower, "saliency_target", None)
    if callable(own):
        return [own()]
    for module in tower.modules():
        for _, find in _FAMILIES:
            targets = find(module)
            if targets:
                return targets
    raise NotImplementedError(
        f"No patch tokens found in the image tower {type(tower).__name__}: saliency maps support ViT towers "
        f"({', '.join(name for name, _ in _FAMILIES)}) or towers with a saliency_target() method."
    )


def find_saliency_target(tower: nn.Module) -> SaliencyTarget:
    """The patch-token target of a vision tower's last block (see :func:`saliency_targets`)."""
    return saliency_targets(tower)[-1]


def _patch_tokens(tokens: torch.Tensor, batch: int, target: SaliencyTarget) -> torch.Tensor:
    """``(B, gh * gw, width)`` patch tokens of a block's ``(B, T, width)`` or ``(T, B, width)`` token sequence."""
    x = tokens.transpose(0, 1) if tokens.shape[0] != batch and tokens.shape[1] == batch else tokens
    (gh, gw), start = target.grid, target.prefix
    return x[:, start : start + gh * gw]


def last_reading_target(network: nn.Module, targets: list[SaliencyTarget], image_size: int) -> SaliencyTarget:
    """The last of ``targets`` whose patch tokens the class scores depend on.

    A block can be an exact identity (zero output projections, as in the demo's partly trained backbone): its
    patch tokens then get no gradient and its Grad-CAM map would be empty. One forward/backward pass of a random
    image finds the last block that still reads the patch tokens.
    """
    if len(targets) == 1:
        return targets[0]
    seen: dict[int, torch.Tensor] = {}

    def keep(index: int):
        def hook(_module, _inputs, output):
            if output.requires_grad:
                output.retain_grad()
                seen[index] = output

        return hook

    handles = [t.module.register_forward_hook(keep(i)) for i, t in enumerate(targets)]
    device = next((b.device for b in network.buffers()), torch.device("cpu"))
    probe = torch.randn(1, 3, image_size, image_size, generator=torch.Generator().manual_seed(0)).to(device)
    was_training = network.training
    try:
        network.eval()
        with torch.enable_grad():
            network(probe.requires_grad_(True)).sum().backward()
    finally:
        for handle in handles:
            handle.remove()
        network.zero_grad(set_to_none=True)
        network.train(was_training)
    for index in sorted(seen, reverse=True):
        grad = seen[index].grad
        if grad is not None and bool(_patch_tokens(grad, 1, targets[index]).abs().sum() > 0):
            return targets[index]
    return targets[-1]


class _GridView(nn.Module):
    """Identity on a ``(B, width, gh, gw)`` patch grid: the module MONAI's GradCAM hooks."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * 1.0  # a new tensor, so that the full backward hook sees this module's own output


class _HookedClassifier(nn.Module):
    """The classifier with its patch tokens shown to MONAI's CAM as the ``grid`` sub-module's output."""

    def __init__(self, network: nn.Module, target: SaliencyTarget) -> None:
        super().__init__()
        self.network = network
        self.grid = _GridView()
        self.target = target
        self._batch = 0

    def _reroute(self, _module: nn.Module, _inputs, tokens: torch.Tensor) -> torch.Tensor:
        transposed = tokens.shape[0] != self._batch and tokens.shape[1] == self._batch
        x = tokens.transpose(0, 1) if transposed else tokens
        (gh, gw), start = self.target.grid, self.target.prefix
        stop = start + gh * gw
        if x.shape[1] < stop:
            raise ValueError(f"Expected at least {stop} tokens ({start} prefix + {gh}x{gw} patches), got {x.shape[1]}.")
        grid = x[:, start:stop].transpose(1, 2).reshape(x.shape[0], x.shape[2], gh, gw)
        patches = self.grid(grid).flatten(2).transpose(1, 2)
        x = torch.cat([x[:, :start], patches, x[:, stop:]], dim=1)
        return x.transpose(0, 1) if transposed else x

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self._batch = images.shape[0]
        handle = self.target.module.register_forward_hook(self._reroute)
        try:
            return self.network(images)
        finally:
            handle.remove()


class SaliencyMethod(StrEnum):
    """How the gradient weighs the patch-token activations.

    - ``hirescam`` (default; Draelos and Carin 2020): ``relu(sum_d dS/dA_pd * A_pd)`` per patch ``p``, the
      element-wise product, i.e. each patch token's own first-order contribution to the score ``S``.
    - ``gradcam`` (Selvaraju et al. 2017): ``relu(sum_d mean_p(dS/dA_pd) * A_pd)``, one weight per channel.

    On ViTs the channel-averaged weights of Grad-CAM often make every patch negative (an empty map); HiResCAM keeps
    each token's own gradient.
    """

    HIRESCAM = "hirescam"
    GRADCAM = "gradcam"


def _hirescam_class():
    from monai.visualize import GradCAM

    class _HiResCAM(GradCAM):
        """MONAI's GradCAM with element-wise gradient x activation (same hooks, upsampling and scaling)."""

        def compute_map(self, x, class_idx=None, retain_graph=False, layer_idx=-1, **kwargs):
            _, acti, grad = self.nn_module(x, class_idx=class_idx, retain_graph=retain_graph, **kwargs)
            return torch.relu((grad[layer_idx] * acti[layer_idx]).sum(1, keepdim=True))

    return _HiResCAM


class TokenGradCAM:
    """Gradient-weighted class activation maps of a CLIP classifier's ViT image tower (any method of this package).

    Args:
        network: a classifier with a ``vision_tower`` (CILMP and every baseline).
        target: where the patch tokens are (default: the last block of ``network.vision_tower`` that the scores depend
            on, see :func:`last_reading_target`; networks without ``image_size`` get the last block).
        method: ``"hirescam"`` or ``"gradcam"`` (see :class:`SaliencyMethod`).

    Example::

        cam = TokenGradCAM(net)
        maps = cam(images)  # (B, 1, H, W) in [0, 1], H x W the network's input size
    """

    def __init__(
        self, network: nn.Module, target: SaliencyTarget | None = None, method: str | SaliencyMethod = "hirescam"
    ) -> None:
        from monai.visualize import GradCAM

        self.method = look_up_option(method, SaliencyMethod)

        tower = getattr(network, "vision_tower", None)
        if target is None:
            if tower is None:
                raise NotImplementedError(f"{type(network).__name__} has no vision_tower to explain.")
            targets = saliency_targets(tower)
            size = getattr(network, "image_size", None)
            target = last_reading_target(network, targets, int(size)) if size else targets[-1]
        self.network = network
        # in eval mode: MONAI's CAM puts its module back in the mode it found it in, which would otherwise switch the
        # network to training mode (dropout) after every map
        self.hooked = _HookedClassifier(network, target).eval()
        cam_class = GradCAM if self.method == SaliencyMethod.GRADCAM else _hirescam_class()
        self.cam = cam_class(nn_module=self.hooked, target_layers="grid")

    def __call__(self, images: torch.Tensor, class_idx: int | Sequence[int] | None = None) -> torch.Tensor:
        """Saliency maps ``(B, 1, H, W)`` in ``[0, 1]`` for normalised images ``(B, 3, H, W)``.

        Args:
            images: the preprocessed batch.
            class_idx: the class explained, per image or one for all (default: each image's predicted class).
        """
        images = images.as_tensor() if hasattr(images, "as_tensor") else images
        device = next((b.device for b in self.network.buffers()), images.device)
        maps = []
        was_training = self.network.training
        self.hooked.eval()
        for i in range(images.shape[0]):
            # the input needs a gradient: a tower without trainable prompts has no other path for one
            x = images[i : i + 1].detach().to(device).float().requires_grad_(True)
            idx = class_idx if class_idx is None or isinstance(class_idx, int) else int(class_idx[i])
            with torch.enable_grad():
                maps.append(self.cam(x, class_idx=idx).detach().float().cpu())
        self.network.zero_grad(set_to_none=True)
        self.network.train(was_training)
        return torch.nan_to_num(torch.cat(maps), nan=0.0)


def unnormalise(image: torch.Tensor | np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """A normalised ``(3, H, W)`` image back to ``[0, 1]`` RGB (for display)."""
    x = np.asarray(image.detach().cpu() if isinstance(image, torch.Tensor) else image, dtype=np.float32)
    x = x * np.asarray(std, dtype=np.float32)[:, None, None] + np.asarray(mean, dtype=np.float32)[:, None, None]
    return np.clip(x, 0.0, 1.0)


def save_saliency_overlay(
    image: np.ndarray, saliency: np.ndarray, path: str | os.PathLike, title: str | None = None, alpha: float = 0.45
) -> Path:
    """Write the image and the saliency map blended over it (MONAI's ``blend_images``) side by side as a PNG.

    Args:
        image: ``(3, H, W)`` RGB in ``[0, 1]`` (see :func:`unnormalise`).
        saliency: ``(H, W)`` or ``(1, H, W)`` map in ``[0, 1]``.
        path: the PNG file.
        title: the figure's title (e.g. the class and its probability).
        alpha: opacity of the map in the overlay.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize
    from matplotlib.figure import Figure
    from monai.visualize import blend_images

    heat = np.asarray(saliency, dtype=np.float32).reshape(1, *image.shape[-2:])
    blended = np.asarray(blend_images(image, heat, alpha=alpha, cmap="jet", rescale_arrays=False))

    def write(tmp: str) -> None:
        fig = Figure(figsize=(8, 4.3))
        left, right = fig.subplots(1, 2)
        left.imshow(np.moveaxis(image, 0, -1))
        left.set_title("network input")
        right.imshow(np.moveaxis(blended, 0, -1))
        right.set_title("saliency of the patch tokens")
        for ax in (left, right):
            ax.axis("off")
        scale = ScalarMappable(Normalize(0.0, 1.0), cmap="jet")
        fig.colorbar(scale, ax=right, fraction=0.046, pad=0.04, label="saliency (0-1)")
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(tmp, format="png", dpi=110)

    return atomic_write(path, write)
