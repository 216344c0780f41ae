"""The demo's steps around CILMP training, as the bundle overlay ``configs/demo.json`` calls them.

The overlay runs the CILMP bundle's own ``train.json`` on what :func:`prepare_demo` makes::

    <dataset_dir>/images/, datalist.json, descriptions.json   make_synthetic_dataset
    <dataset_dir>/backbone/cilmp-tiny-synthetic.safetensors   pretrain_tiny_clip (CILMP-Tiny made meaningful)
    <dataset_dir>/knowledge.safetensors                       extract_knowledge with the embedded MiniLM
    <output_dir>/checkpoints, tensorboard, test_*             the bundle's trainer and evaluate_split

then prints :func:`demo_report`: CILMP's test metrics beside chance and the zero-shot accuracy of the same backbone.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from monai_cilmp.data import load_datalist
from monai_cilmp.engines import format_trust_summary, predict
from monai_cilmp.knowledge import extract_knowledge, load_description_file
from monai_cilmp.networks import load_backbone
from monai_cilmp.networks.backbones import TINY_BACKBONE, keep_project_pretrained
from monai_cilmp.networks.nets import ZeroShotCLIP
from monai_cilmp.transforms import get_preset
from monai_cilmp.utils.files import read_json, write_json

from .pretrain import DEFAULT_STEPS, pretrain_tiny_clip
from .synthetic import DEFAULT_ACQUISITION, make_synthetic_dataset

__all__ = ["BACKBONE_FILE", "MANIFEST_FILE", "demo_report", "keep_backbone", "prepare_demo", "zero_shot_baselines"]

logger = logging.getLogger(__name__)

BACKBONE_FILE = "backbone/cilmp-tiny-synthetic.safetensors"
MANIFEST_FILE = "demo.json"
"""Written last by :func:`prepare_demo`: the settings the folder was made with (a re-run with them reuses it)."""


def prepare_demo(
    dataset_dir: str | os.PathLike,
    images_per_class: int = 100,
    seed: int = 0,
    pretrain_steps: int = DEFAULT_STEPS,
    knowledge_max_length: int | None = 24,
    acquisition: float = DEFAULT_ACQUISITION,
    num_threads: int | None = None,
) -> dict[str, str]:
    """Make the demo's data, backbone and knowledge bank in ``dataset_dir``, or reuse them if already made alike.

    Args:
        dataset_dir: the folder (created).
        images_per_class: synthetic images per class (60 % training, 20 % validation, 20 % test).
        seed: seed of the images, their split and the backbone's pre-training.
        pretrain_steps: contrastive pre-training steps of ``CILMP-Tiny`` on synthetic image-caption pairs.
        knowledge_max_length: cap on knowledge tokens per class (``None``: the whole description).
        acquisition: strength of the synthetic dermatoscope's look (a domain shift from pre-training).
        num_threads: torch threads during preparation (``None``: as set).

    Returns:
        paths of ``"datalist"``, ``"descriptions"``, ``"backbone"`` and ``"knowledge"``.
    """
    import torch

    root = Path(dataset_dir).expanduser().resolve()
    settings = {
        "images_per_class": int(images_per_class),
        "seed": int(seed),
        "pretrain_steps": int(pretrain_steps),
        "knowledge_max_length": knowledge_max_length,
        "acquisition": float(acquisition),
    }
    paths = {
        "datalist": str(root / "datalist.json"),
        "descriptions": str(root / "descriptions.json"),
        "backbone": str(root / BACKBONE_FILE),
        "knowledge": str(root / "knowledge.safetensors"),
    }
    manifest = root / MANIFEST_FILE
    made = manifest.is_file() and all(Path(p).is_file() for p in paths.values())
    if made and read_json(manifest).get("settings") == settings:
        print(f"Demo data, backbone and knowledge already in {root} (made with the same settings): reusing them.")
        keep_backbone(paths["backbone"])
        return paths
    # complete or remade: without its manifest (written last) or with other settings, nothing of the folder's demo
    # files is reused; images of an interrupted or larger run would otherwise join the new datalist
    manifest.unlink(missing_ok=True)
    shutil.rmtree(root / "images", ignore_errors=True)
    shutil.rmtree(root / Path(BACKBONE_FILE).parent, ignore_errors=True)
    for leftover in ("datalist", "descriptions", "knowledge"):
        Path(paths[leftover]).unlink(missing_ok=True)

    previous_threads = torch.get_num_threads()
    if num_threads:
        torch.set_num_threads(int(num_threads))
    try:
        start = time.perf_counter()
        print(f"[1/3] Drawing {4 * images_per_class} synthetic dermoscopy-like images of 4 classes into {root}")
        data = make_synthetic_dataset(root, images_per_class, seed, acquisition=acquisition)
        for line in str(data["summary"]).splitlines():
            print(f"      {line}")
        print(f"[2/3] Pre-training the tiny CLIP backbone on synthetic image-caption pairs ({pretrain_steps} steps)")
        pretrained = pretrain_tiny_clip(paths["backbone"], steps=pretrain_steps, seed=seed)
        print(f"      final contrastive loss {pretrained.final_loss:.3f} after {pretrained.seconds:.0f} s")
        print("[3/3] Extracting class knowledge from the descriptions with the embedded MiniLM encoder")
        bank = extract_knowledge(
            descriptions=load_description_file(paths["descriptions"]),
            offline=True,
            device="cpu",
            dtype="fp32",
            max_length=knowledge_max_length,
        )
        bank.save(paths["knowledge"])
    finally:
        torch.set_num_threads(previous_threads)
    write_json(manifest, {"settings": settings, "paths": paths, "seconds": round(time.perf_counter() - start, 1)})
    keep_backbone(paths["backbone"])
    return paths


def keep_backbone(path: str | os.PathLike) -> Path:
    """Keep the demo's pre-trained tiny CLIP as the named weights ``--backbone CILMP-Tiny --pretrained synthetic``
    (in :func:`~monai_cilmp.networks.backbones.project_weights_dir`), for training on your own data offline."""

    # stored by content (never rewritten): runs trained on earlier weights of the name keep theirs
    target = keep_project_pretrained(TINY_BACKBONE, "synthetic", path)
    print(f"      the pre-trained tiny CLIP is kept as --backbone {TINY_BACKBONE} --pretrained synthetic ({target})")
    return target


def zero_shot_baselines(
    pretrained: str | os.PathLike,
    datalist_file: str | os.PathLike,
    descriptions_file: str | os.PathLike,
    split: str = "test",
    batch_size: int = 64,
) -> dict[str, float]:
    """Accuracy of the frozen backbone on ``split`` without any training, prompted by class names and descriptions.

    Returns:
        ``{"zero_shot_names": ..., "zero_shot_descriptions": ...}``: :class:`~monai_cilmp.networks.nets.ZeroShotCLIP`
        with ``"a photo of a <class>."`` and with each class's description text.
    """
    from monai.data import DataLoader, Dataset

    backbone = load_backbone(TINY_BACKBONE, str(pretrained))
    datalist = load_datalist(datalist_file)
    names = datalist["class_names"]
    descriptions = load_description_file(descriptions_file)
    transform = get_preset(datalist.get("preset") or "dermoscopy").eval_transforms(
        keys="image", image_size=backbone.image_size, mean=backbone.mean, std=backbone.std
    )
    loader = DataLoader(Dataset(datalist[split], transform), batch_size=batch_size, num_workers=0)
    networks = {
        "zero_shot_names": ZeroShotCLIP(names, backbone, text="template"),
        "zero_shot_descriptions": ZeroShotCLIP(names, backbone, prompts={n: [descriptions[n].text] for n in names}),
    }
    accuracies = {}
    for key, network in networks.items():
        probabilities, labels = predict(network, loader, device="cpu")
        accuracies[key] = float((probabilities.argmax(axis=1) == labels).mean())
    return accuracies


def demo_report(
    metrics: Mapping[str, Any], zero_shot: Mapping[str, float], output_dir: str | os.PathLike, checkpoint: Any
) -> dict[str, Any]:
    """Print CILMP's test metrics beside chance and zero-shot, and where the outputs are; save it as JSON.

    Args:
        metrics: what :func:`~monai_cilmp.engines.evaluate_split` returned for the test split.
        zero_shot: what :func:`zero_shot_baselines` returned.
        output_dir: the run folder.
        checkpoint: the final checkpoint's path.

    Returns:
        the summary written to ``<output_dir>/demo_summary.json``.
    """
    out = Path(output_dir).resolve()
    n_classes = len(metrics["class_names"])
    rows = [
        ("chance", 1.0 / n_classes, None, None),
        ('zero-shot, "a photo of a <class>."', zero_shot["zero_shot_names"], None, None),
        ("zero-shot, class descriptions", zero_shot["zero_shot_descriptions"], None, None),
        ("CILMP (trained)", metrics["accuracy"], metrics.get("macro_f1"), metrics.get("macro_auc")),
    ]
    print("\nTest accuracy of the same tiny backbone:")
    print(f"  {'':34s}{'accuracy':>10s}{'macro-F1':>10s}{'AUC':>8s}")
    for name, acc, f1, auc in rows:
        f1_text = f"{f1:10.3f}" if f1 is not None else f"{'':10s}"
        auc_text = f"{auc:8.3f}" if auc is not None else ""
        print(f"  {name:34s}{acc:10.3f}{f1_text}{auc_text}")

    print("\nCan its probabilities be trusted? (temperature and conformal sets fitted on the validation split)")
    print("\n".join("  " + line for line in format_trust_summary(dict(metrics)).splitlines()))
    files = dict(metrics.get("files", {}))
    calibration, conformal = metrics.get("calibration") or {}, metrics.get("conformal") or {}
    summary = {
        "accuracy": float(metrics["accuracy"]),
        "chance": 1.0 / n_classes,
        **{k: float(v) for k, v in zero_shot.items()},
        "balanced_accuracy": metrics.get("balanced_accuracy"),
        "macro_f1": metrics.get("macro_f1"),
        "macro_auc": metrics.get("macro_auc"),
        "ece_before_scaling": (calibration.get("before") or {}).get("ece"),
        "ece_after_scaling": (calibration.get("after") or {}).get("ece"),
        "temperature": calibration.get("temperature"),
        "conformal_alpha": conformal.get("alpha"),
        "conformal_coverage": conformal.get("coverage"),
        "conformal_mean_set_size": conformal.get("mean_set_size"),
        "files": {"checkpoint": str(checkpoint), "tensorboard": str(out / "tensorboard"), **files},
    }
    path = write_json(out / "demo_summary.json", summary)
    print("\nOutputs:")
    print(f"  checkpoint        {checkpoint}")
    print(f"  TensorBoard       tensorboard --logdir {out / 'tensorboard'}")
    for key in ("metrics", "confusion_png", "confusion_csv", "predictions", "reliability", "conformal_png"):
        if key in files:
            print(f"  {key:18s}{files[key]}")
    print(f"  summary           {path}")
    print(f"Evaluate again with: monai-cilmp evaluate --run {out}")
    return summary
