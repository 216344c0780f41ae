"""Which frozen open_clip backbone a network is built on, said once: :class:`BackboneSpec`.

Every network of :mod:`monai_cilmp.networks.nets` takes its backbone as ``backbone`` (plus ``pretrained``, the
pair open_clip's ``create_model`` takes): a :class:`BackboneSpec`, a loaded
:class:`~monai_cilmp.networks.backbones.Backbone` (several networks then share its frozen modules), or a model name,
whose other loading options (``offline``, ``cache_dir``, ``quick_gelu``) come as keywords. :func:`resolve_backbone`
turns any of them into a loaded backbone, so that no network repeats those keywords; bundle configs keep writing
plain values (``"backbone": "@backbone", "pretrained": "@pretrained", "offline": "@offline"``).
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from typing import Any

from monai_cilmp.networks.backbones import Backbone, load_backbone

__all__ = ["BACKBONE_OPTIONS", "BackboneLike", "BackboneSpec", "resolve_backbone"]


@dataclass(frozen=True)
class BackboneSpec:
    """How to load a frozen open_clip backbone (the arguments of :func:`~monai_cilmp.networks.load_backbone`
    that a network's result depends on or that say where the weights are).

    Attributes:
        name: open_clip model name (``"ViT-B-16"``, ``"CILMP-Tiny"``), ``hf-hub:`` id or local folder.
        pretrained: pretrained tag or checkpoint file for a model name (``None``: random weights).
        offline: never download backbone weights.
        cache_dir: where backbone weights are cached (default: the Hugging Face cache).
        quick_gelu: force the QuickGELU activation on or off (``None``: from the weights' provenance; see
            :func:`~monai_cilmp.networks.load_backbone`).
    """

    name: str = "ViT-B-16"
    pretrained: str | None = "openai"
    offline: bool = False
    cache_dir: str | os.PathLike | None = None
    quick_gelu: bool | None = None

    def load(self) -> Backbone:
        """The loaded backbone (model in eval mode, on the CPU)."""
        return load_backbone(
            self.name, self.pretrained, offline=self.offline, cache_dir=self.cache_dir, quick_gelu=self.quick_gelu
        )


#: the :class:`BackboneSpec` fields a network takes as keywords beside a model name (``backbone``, ``pretrained``)
BACKBONE_OPTIONS: tuple[str, ...] = tuple(
    f.name for f in dataclasses.fields(BackboneSpec) if f.name not in ("name", "pretrained")
)

#: what a network's ``backbone`` argument may be
BackboneLike = str | BackboneSpec | Backbone


def resolve_backbone(backbone: BackboneLike, pretrained: str | None = "openai", **options: Any) -> Backbone:
    """The loaded backbone ``backbone`` stands for.

    Args:
        backbone: a loaded :class:`~monai_cilmp.networks.backbones.Backbone` (returned as it is), a
            :class:`BackboneSpec` (loaded), or a model name (loaded with ``pretrained`` and ``options``).
        pretrained: pretrained tag or checkpoint file, for a model name only.
        options: :data:`BACKBONE_OPTIONS` (``offline``, ``cache_dir``, ``quick_gelu``), for a model name; ignored for
            a loaded backbone, as ``pretrained`` is.

    Raises:
        TypeError: an option that is not a :class:`BackboneSpec` field, or options beside a :class:`BackboneSpec`
            (which holds its own).
    """
    unknown = sorted(set(options) - set(BACKBONE_OPTIONS))
    if unknown:
        raise TypeError(
            f"Unexpected keyword argument(s) {unknown}: neither a setting of the network nor a backbone option "
            f"({', '.join(BACKBONE_OPTIONS)}); check the spelling against the network's docstring."
        )
    if isinstance(backbone, Backbone):
        return backbone
    if isinstance(backbone, BackboneSpec):
        if options:
            raise TypeError(
                f"Backbone options {sorted(options)} were given beside a BackboneSpec: set them in the spec instead "
                f"(dataclasses.replace(spec, {', '.join(f'{k}=...' for k in sorted(options))}))."
            )
        return backbone.load()
    return BackboneSpec(str(backbone), pretrained, **options).load()
