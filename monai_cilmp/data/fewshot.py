"""Few-shot datalists (K images per class, seeded) and the base-to-novel class split of prompt-tuning papers.

Prompt-tuning papers (CoOp, CoCoOp, MaPLe, CILMP) train on K = 1, 2, 4, 8 or 16 images per class drawn from the
training split with a seed, and report base-to-novel generalisation by training on the first half of the classes
("base") and testing on the rest ("novel"). Saving the sampled datalist makes a run reproducible.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from monai_cilmp.utils.enums import StrEnum

from .datalist import SPLITS, validate_datalist
from .splits import dassl_few_shot

__all__ = [
    "COMMON_SHOTS",
    "ClassSubset",
    "FewShotSampler",
    "base_novel_split",
    "few_shot_datalist",
    "subsample_classes",
]

COMMON_SHOTS = (1, 2, 4, 8, 16)


class FewShotSampler(StrEnum):
    """How :func:`few_shot_datalist` draws.

    - ``monai-cilmp``: a generator seeded by ``(seed, label)`` per class, independent of the datalist's order.
    - ``dassl``: Dassl's draw (CoOp, BiomedCoOp, ...), see :func:`~monai_cilmp.data.splits.dassl_few_shot`: on a
      datalist imported from a published split file it gives the subsets of that code's seeds.
    """

    MONAI_CILMP = "monai-cilmp"
    DASSL = "dassl"


class ClassSubset(StrEnum):
    """Which classes :func:`subsample_classes` keeps."""

    ALL = "all"
    BASE = "base"
    NOVEL = "novel"


def _sample(items: Sequence[Mapping[str, Any]], shots: int, seed: int, label: int) -> list[dict[str, Any]]:
    # sorted first so that the sample does not depend on the datalist's order; one generator per class so that
    # the sample of one class does not depend on the others
    ordered = sorted(items, key=lambda item: str(item["image"]))
    picks = np.random.default_rng([seed, label]).choice(len(ordered), size=shots, replace=False)
    return [dict(ordered[i]) for i in picks]


def few_shot_datalist(
    datalist: Mapping[str, Any],
    shots: int,
    seed: int = 0,
    *,
    val_shots: int | None = None,
    source: str = "the datalist",
    sampler: str = FewShotSampler.MONAI_CILMP,
) -> dict[str, Any]:
    """A datalist whose training split has exactly ``shots`` images per class, drawn with ``seed``.

    Args:
        datalist: a datalist with ``class_names`` (see :mod:`monai_cilmp.data.datalist`).
        shots: images per class (K; papers use 1, 2, 4, 8 and 16).
        seed: the sampling seed; the same datalist, K and seed always give the same images.
        val_shots: also reduce the validation split to at most this many images per class (``None`` keeps it);
            classes with fewer keep all theirs.
        source: what the datalist is, for error messages.
        sampler: :class:`FewShotSampler`; with ``"dassl"`` the validation split is reduced as Dassl does, to
            ``min(shots, 4)`` per class, unless ``val_shots`` is given, and the items keep Dassl's order.

    Returns:
        the new datalist, with ``few_shot: {"shots", "seed", "val_shots", "sampler"}`` recorded; the test split is
        unchanged.

    Raises:
        ValueError: ``shots`` < 1, or a class has fewer than ``shots`` training images (naming it).
    """
    if int(shots) < 1:
        raise ValueError(f"shots must be a positive number of images per class, got {shots}.")
    shots = int(shots)
    from monai.utils import look_up_option

    sampler = look_up_option(sampler, FewShotSampler)
    data = validate_datalist(datalist, source=source)
    names = data["class_names"]
    training: list[dict[str, Any]] = []
    validation: list[dict[str, Any]] = []
    for label, name in enumerate(names):
        pool = [item for item in data["training"] if int(item["label"]) == label]
        if len(pool) < shots:
            raise ValueError(
                f"Class '{name}' has only {len(pool)} training image{'s' if len(pool) != 1 else ''} in {source}, "
                f"fewer than the {shots} shots asked for."
            )
        if sampler == FewShotSampler.MONAI_CILMP:
            training += _sample(pool, shots, seed, label)
            if val_shots is not None:
                val_pool = [item for item in data["validation"] if int(item["label"]) == label]
                validation += _sample(val_pool, min(int(val_shots), len(val_pool)), seed, label)
    if sampler == FewShotSampler.DASSL:
        val_shots = min(shots, 4) if val_shots is None else int(val_shots)
        rng = random.Random(int(seed))  # Dassl seeds Python's generator once, then draws train, then val
        label_of = lambda item: int(item["label"])  # noqa: E731
        training = [dict(i) for i in dassl_few_shot(data["training"], shots, rng, label_of)]
        validation = [dict(i) for i in dassl_few_shot(data["validation"], val_shots, rng, label_of)]
    out = {k: v for k, v in data.items() if k not in SPLITS}
    out["few_shot"] = {"shots": shots, "seed": int(seed), "val_shots": val_shots, "sampler": str(sampler)}
    out["training"] = training
    out["validation"] = validation if val_shots is not None else [dict(i) for i in data["validation"]]
    out["test"] = [dict(i) for i in data["test"]]
    return validate_datalist(out, source=source)


def base_novel_split(class_names: Sequence[str]) -> tuple[list[int], list[int]]:
    """Label indices of the base and novel classes: the first ``ceil(C / 2)`` classes are base (as in CoCoOp).

    Raises:
        ValueError: fewer than two classes.
    """
    if len(class_names) < 2:
        raise ValueError(f"A base/novel split needs at least two classes, got {len(class_names)}.")
    middle = math.ceil(len(class_names) / 2)
    return list(range(middle)), list(range(middle, len(class_names)))


def subsample_classes(datalist: Mapping[str, Any], subset: str = ClassSubset.BASE) -> dict[str, Any]:
    """The datalist restricted to the base or novel classes, relabelled ``0..n-1`` in the original order.

    Args:
        datalist: a datalist with ``class_names``.
        subset: ``"base"``, ``"novel"`` or ``"all"``.

    Returns:
        the new datalist, recording ``class_subset``.
    """
    from monai.utils import look_up_option

    subset = look_up_option(subset, ClassSubset)
    data = validate_datalist(datalist)
    names = data["class_names"]
    base, novel = base_novel_split(names)
    keep = {ClassSubset.ALL: list(range(len(names))), ClassSubset.BASE: base, ClassSubset.NOVEL: novel}[subset]
    relabel = {old: new for new, old in enumerate(keep)}
    out = {k: v for k, v in data.items() if k not in SPLITS}
    out["class_names"] = [names[i] for i in keep]
    out["class_subset"] = str(subset)
    for split in SPLITS:
        out[split] = [
            {**item, "label": relabel[int(item["label"])]} for item in data[split] if int(item["label"]) in relabel
        ]
    return validate_datalist(out)
