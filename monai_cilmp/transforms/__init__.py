"""Medical image transforms: readers, per-modality intensity and geometry transforms, and CLIP-ready presets.

Array transforms declare their ``backend``; each has a dictionary variant with the ``d`` suffix and the ``D`` and
``Dict`` aliases (``CTWindow``, ``CTWindowd = CTWindowD = CTWindowDict``). Presets chain them per modality::

    from monai_cilmp.transforms import get_preset

    train = get_preset("radiography").train_transforms(keys="image", image_size=224, mean=mean, std=std)
"""

from __future__ import annotations

from . import color, intensity, post, presets, readers, spatial
from .color import *  # noqa: F403
from .intensity import *  # noqa: F403
from .post import *  # noqa: F403
from .presets import *  # noqa: F403
from .readers import *  # noqa: F403
from .spatial import *  # noqa: F403

__all__ = [
    *readers.__all__,
    *intensity.__all__,
    *color.__all__,
    *spatial.__all__,
    *presets.__all__,
    *post.__all__,
]
