"""``monai-cilmp prepare``: build a MONAI datalist from a dataset download, a folder per class, a CSV file or a
datalist, or sample a few-shot or base/novel datalist from one.

Examples::

    monai-cilmp prepare folder data/xrays --out xrays.json --val-fraction 0.1 --test-fraction 0.2 --check
    monai-cilmp prepare csv labels.csv --out mine.json --classes normal pneumonia
    monai-cilmp prepare kvasir --raw downloads/kvasir-dataset-v2 --out kvasir.json
    monai-cilmp prepare fewshot kvasir.json --shots 16 --seed 1 --out kvasir_16shot_seed1.json
    monai-cilmp prepare split-file data/BTMRI/split_BTMRI.json --dataset btmri --out btmri.json
    monai-cilmp prepare fewshot btmri.json --shots 16 --seed 1 --sampler dassl --out btmri_16shot_seed1.json

Datalists are written atomically: on any error nothing is written. ``--check`` opens every image once and
reports all unreadable files before anything is written.
"""

from __future__ import annotations

import argparse
from typing import Any

from monai_cilmp.cli import plain_text
from monai_cilmp.data import (
    COMMON_SHOTS,
    ClassSubset,
    FewShotSampler,
    datalist_from_csv,
    datalist_from_datalist,
    datalist_from_folder,
    datalist_from_split_file,
    few_shot_datalist,
    get_dataset,
    list_datasets,
    load_datalist,
    subsample_classes,
    summarize_datalist,
    write_datalist,
)
from monai_cilmp.data.registry import describe_layouts


def _common(parser: argparse.ArgumentParser, split: bool = True) -> None:
    parser.add_argument("--out", required=True, metavar="DATALIST.json", help="the datalist to write")
    if split:
        parser.add_argument("--val-fraction", type=float, default=0.1, help="validation fraction per class (0.1)")
        parser.add_argument("--test-fraction", type=float, default=0.2, help="test fraction per class (0.2)")
        parser.add_argument("--seed", type=int, default=0, help="seed of the split (0)")
    parser.add_argument("--check", action="store_true", help="open every image first; report all unreadable files")


def _own_data(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--classes", nargs="+", metavar="NAME", help="class names in label order (default: sorted)")
    parser.add_argument("--preset", help="modality preset to record in the datalist (e.g. radiography)")
    _common(parser)


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "prepare",
        help="build MONAI datalists from downloads, folders, CSV files; few-shot and base/novel splits",
        description=plain_text(__doc__),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sources = parser.add_subparsers(dest="source", metavar="SOURCE", required=True)

    folder = sources.add_parser("folder", help="a folder per class: ROOT/<class>/... or ROOT/<split>/<class>/...")
    folder.add_argument("root", metavar="ROOT", help="the folder holding one sub-folder of images per class")
    _own_data(folder)
    folder.set_defaults(func=_run_folder)

    table = sources.add_parser("csv", help="a CSV file with an image path and a label name per row")
    table.add_argument("file", metavar="FILE", help="the CSV file (a header row, then one image per row)")
    table.add_argument("--image-column", help="the image path column (default: image, path, filename, ...)")
    table.add_argument("--label-column", help="the label column (default: label, class, diagnosis, ...)")
    table.add_argument("--split-column", help="a train/val/test column (default: 'split' when present)")
    table.add_argument("--base-dir", help="folder relative paths start from (default: the CSV's folder)")
    _own_data(table)
    table.set_defaults(func=_run_csv)

    existing = sources.add_parser("datalist", help="validate and complete an existing MONAI datalist")
    existing.add_argument("file", metavar="FILE", help="a MONAI datalist JSON ('training'/'validation'/'test')")
    _own_data(existing)
    existing.set_defaults(func=_run_datalist)

    fewshot = sources.add_parser("fewshot", help="K training images per class, drawn with a seed")
    fewshot.add_argument("datalist", metavar="DATALIST", help="the full datalist to draw from")
    fewshot.add_argument("--shots", type=int, required=True, help=f"images per class (papers: {COMMON_SHOTS})")
    fewshot.add_argument("--seed", type=int, default=0, help="sampling seed (0)")
    fewshot.add_argument("--val-shots", type=int, help="also keep at most this many validation images per class")
    fewshot.add_argument(
        "--sampler",
        choices=[str(s) for s in FewShotSampler],
        default=str(FewShotSampler.MONAI_CILMP),
        help="dassl: the draw of CoOp/BiomedCoOp's code, giving their seeds' subsets of an imported split file",
    )
    _common(fewshot, split=False)
    fewshot.set_defaults(func=_run_fewshot)

    published = sources.add_parser("split-file", help="a published split_*.json of CoOp / BiomedCoOp, exactly")
    published.add_argument("file", metavar="SPLIT.json", help="the published split file")
    published.add_argument("--images", help="folder the split's paths start from (default: <dir>/<Name> or <dir>)")
    published.add_argument("--dataset", help="registered dataset: its preset and class spelling (file order kept)")
    _common(published, split=False)
    published.set_defaults(func=_run_split_file)

    subset = sources.add_parser("base-novel", help="keep the base (first half) or novel classes, relabelled")
    subset.add_argument("datalist", metavar="DATALIST", help="the full datalist")
    subset.add_argument("--subset", choices=[str(s) for s in ClassSubset], required=True)
    _common(subset, split=False)
    subset.set_defaults(func=_run_subset)

    for name in list_datasets():
        spec = get_dataset(name)
        dataset = sources.add_parser(
            name,
            aliases=list(spec.aliases),
            help=f"{spec.title} ({spec.num_classes} classes, {spec.preset})",
            description=describe_layouts(name),
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        dataset.add_argument("--raw", required=True, metavar="DIR", help="the unpacked public download")
        if any(layout.kind == "npz" for layout in spec.layouts):
            dataset.add_argument("--image-dir", help="where the PNG images go (default: next to the datalist)")
        _common(dataset)
        dataset.set_defaults(func=_run_dataset, dataset=name)


def _report(datalist: dict[str, Any], out: str) -> int:
    total = sum(len(datalist[s]) for s in ("training", "validation", "test"))
    classes = len(datalist["class_names"])
    print(f"Wrote {out}: {classes} class{'' if classes == 1 else 'es'}, {total} image{'' if total == 1 else 's'}")
    for line in summarize_datalist(datalist).splitlines():
        print(f"  {line}")
    return 0


def _write(datalist: dict[str, Any], args: argparse.Namespace, source: str) -> int:
    if args.check:
        # lazy imports here and below: `--help` and argument errors load neither torch nor MONAI
        from monai_cilmp.data import raise_for_unreadable

        raise_for_unreadable(datalist, source)
    write_datalist(datalist, args.out)
    return _report(datalist, args.out)


def _split_options(args: argparse.Namespace) -> dict[str, Any]:
    if args.preset:
        from monai_cilmp.transforms.presets import get_preset

        get_preset(args.preset)  # fail on an unknown preset before listing any file
    return dict(val_fraction=args.val_fraction, test_fraction=args.test_fraction, seed=args.seed, preset=args.preset)


def _run_folder(args: argparse.Namespace) -> int:
    datalist = datalist_from_folder(args.root, args.classes, **_split_options(args))
    return _write(datalist, args, f"'{args.root}'")


def _run_csv(args: argparse.Namespace) -> int:
    datalist = datalist_from_csv(
        args.file,
        args.classes,
        image_column=args.image_column,
        label_column=args.label_column,
        split_column=args.split_column,
        base_dir=args.base_dir,
        **_split_options(args),
    )
    return _write(datalist, args, f"'{args.file}'")


def _run_datalist(args: argparse.Namespace) -> int:
    datalist = datalist_from_datalist(args.file, args.classes, **_split_options(args))
    return _write(datalist, args, f"'{args.file}'")


def _run_fewshot(args: argparse.Namespace) -> int:
    source = f"'{args.datalist}'"
    datalist = few_shot_datalist(
        load_datalist(args.datalist),
        args.shots,
        args.seed,
        val_shots=args.val_shots,
        source=source,
        sampler=args.sampler,
    )
    return _write(datalist, args, source)


def _run_split_file(args: argparse.Namespace) -> int:
    datalist = datalist_from_split_file(args.file, args.images, dataset=args.dataset)
    return _write(datalist, args, f"'{args.file}'")


def _run_subset(args: argparse.Namespace) -> int:
    datalist = subsample_classes(load_datalist(args.datalist), args.subset)
    return _write(datalist, args, f"'{args.datalist}'")


def _run_dataset(args: argparse.Namespace) -> int:
    options = dict(seed=args.seed, val_fraction=args.val_fraction, test_fraction=args.test_fraction, check=args.check)
    if getattr(args, "image_dir", None):
        options["image_dir"] = args.image_dir
    from monai_cilmp.data import prepare_dataset

    datalist = prepare_dataset(args.dataset, args.raw, args.out, **options)
    return _report(datalist, args.out)
