"""``monai-cilmp export``: a trained run's whole network (frozen towers and trained prompts) as TorchScript or ONNX."""

from __future__ import annotations

import argparse
import json

from monai_cilmp.cli import DefaultsHelpFormatter
from monai_cilmp.cli.evaluate import CHECKPOINTS

FORMATS = ("torchscript", "onnx", "bundle")


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "export",
        help="export a trained run's network as TorchScript or ONNX and check it against PyTorch",
        description=(
            "Trace the network of a run folder written by `monai-cilmp train` for its class set and write it as "
            "TorchScript (.ts) or ONNX (.onnx, opset 17, input 'image', output 'pred', any batch size). The file "
            "takes normalised (B, 3, H, W) images (the run's configs/metadata.json gives H, W) and returns logits or "
            "probabilities. The export is then run on up to --check test images of the run's datalist (random images "
            "when there are none) and the largest probability difference from PyTorch is printed (ONNX needs "
            "onnxruntime for this check). --format bundle instead packs the run into a copy of the CILMP bundle "
            "(--out, a MONAI model-zoo bundle): models/model.pt (the trained parameters only), "
            "models/knowledge.safetensors, the network's values in configs/inference.json, the run's "
            "configs/metadata.json and large_files.yml."
        ),
        formatter_class=DefaultsHelpFormatter,
    )
    parser.add_argument("--run", required=True, help="run folder written by `monai-cilmp train`")
    parser.add_argument("--format", default="torchscript", choices=FORMATS, help="file format")
    parser.add_argument(
        "--out",
        help="file to write (default: RUN/models/model.ts or model.onnx); with --format bundle: the bundle folder",
    )
    parser.add_argument(
        "--url-prefix", help="--format bundle: where the large files will be uploaded (their URLs in large_files.yml)"
    )
    parser.add_argument("--checkpoint", default="final", choices=CHECKPOINTS, help="which checkpoint of the run")
    parser.add_argument(
        "--output", default="logits", choices=("logits", "probabilities"), help="what the exported network returns"
    )
    parser.add_argument("--check", type=int, default=8, help="images to compare against PyTorch (0: no check)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch
    from monai.utils import optional_import

    # lazy imports here and below: `--help` and argument errors load neither torch nor MONAI
    from monai_cilmp.engines.export import export_parity, export_run, run_test_images

    if args.check < 0:
        raise ValueError(f"--check must be 0 or more, not {args.check}.")
    if args.format == "bundle":
        from monai_cilmp.engines.model_zoo import pack_run

        if not args.out:
            raise ValueError(
                "--format bundle needs --out: a copy of the CILMP bundle (e.g. `cp -r bundles/cilmp DIR`)."
            )
        print(json.dumps(pack_run(args.run, args.out, args.checkpoint, args.url_prefix), indent=2))
        return 0
    path, module = export_run(args.run, args.format, args.checkpoint, args.output, args.out)
    report = {"file": str(path), "format": args.format, "checkpoint": args.checkpoint, "output": args.output}
    if args.check:
        _, has_ort = optional_import("onnxruntime")
        if args.format == "onnx" and not has_ort:
            report["check"] = "skipped: onnxruntime is not installed (pip install onnxruntime)"
        else:
            images = run_test_images(args.run, module.network, args.check, args.checkpoint)
            source = "test images of the run's datalist"
            if images is None:
                size = module.image_size
                images = torch.randn(args.check, 3, size, size, generator=torch.Generator().manual_seed(0))
                source = "random images (the run's datalist has no test images here)"
            report["check"] = {"images": int(images.shape[0]), "on": source}
            report["check"]["max_abs_prob_difference"] = difference = export_parity(path, module, images)
            if args.format == "onnx":  # what torch's aten::index export warning (silenced) means for this file
                verdict = "does not apply" if difference < 1e-4 else "may apply: check the difference above"
                report["check"]["negative_index_warning"] = (
                    "torch warns that ONNX's advanced indexing gives wrong results for negative indices; compared "
                    f"with PyTorch on these images it {verdict}"
                )
    print(json.dumps(report, indent=2))
    return 0
