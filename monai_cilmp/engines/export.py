"""Exporting a trained run: the whole network (frozen towers and trained prompts) as TorchScript or ONNX.

The networks are traced (``torch.jit.trace``) for the run's fixed class set, on a batch of two images so that the
per-image text features of conditional methods are traced in their batched form; the traced module accepts any
batch size. :class:`ExportNetwork` is also the bundle's ``network_def``, what MONAI's ``ckpt_export`` loads a
checkpoint into: its ``load_state_dict`` takes the trainable state only (``models/model.pt``, or a run checkpoint's
``network`` entry), and ``torch.jit.script`` (``ckpt_export``'s default, model-zoo's check) compiles it through
TorchScript's ``__prepare_scriptable__`` hook as a scripted shell around the trace (see the bundle README).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from monai.utils import look_up_option
from torch import nn

from monai_cilmp.data import load_datalist
from monai_cilmp.engines.bundle_metadata import RUN_METADATA, bundle_metadata
from monai_cilmp.engines.runs import load_run, run_lock
from monai_cilmp.transforms import get_preset

__all__ = [
    "EXPORT_FORMATS",
    "OUTPUTS",
    "ExportNetwork",
    "export_network",
    "export_parity",
    "export_run",
    "run_test_images",
]

#: format -> file suffix
EXPORT_FORMATS = {"torchscript": ".ts", "onnx": ".onnx"}
#: what the exported network returns
OUTPUTS = ("logits", "probabilities")
#: the batch size traced (see the module docstring)
_TRACE_BATCH = 2


class ExportNetwork(nn.Module):
    """A trained classifier as a bundle network: ``(B, 3, H, W)`` normalised images in, ``(B, C)`` logits or
    probabilities out.

    Args:
        network: a :class:`~monai_cilmp.networks.nets.CLIPClassifier`.
        output: ``"logits"`` or ``"probabilities"`` (softmax of the logits).
    """

    def __init__(self, network: nn.Module, output: str = "logits") -> None:
        super().__init__()
        self.network = network
        self.output = look_up_option(output, OUTPUTS)
        self.image_size = int(network.image_size)

    @property
    def class_names(self) -> list[str]:
        return list(self.network.class_names)

    @property
    def image_mean(self) -> tuple[float, ...]:
        return tuple(self.network.image_mean)

    @property
    def image_std(self) -> tuple[float, ...]:
        return tuple(self.network.image_std)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits = self.network(images)
        return torch.softmax(logits, dim=-1) if self.output == "probabilities" else logits

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False):  # noqa: ARG002
        """Load the trained parameters only (``models/model.pt``, or a run checkpoint's ``network`` entry); the frozen
        towers come with the network. Always strict: every trained tensor must be there with its shape (the
        network's own check names what differs)."""
        self.network.load_trainable_state_dict(state_dict)
        return nn.modules.module._IncompatibleKeys([], [])

    def __prepare_scriptable__(self) -> nn.Module:
        """What ``torch.jit.script`` compiles in place of this module (TorchScript's documented hook).

        The CLIP towers, open_clip's and timm's code and the prompt assembly are not TorchScript-compilable, but the
        forward is free of data-dependent control flow (its branches depend on the class set and the layout only,
        fixed in the network), so the traced graph is the network: :func:`torch.jit.script` (MONAI's ``ckpt_export``
        default, model-zoo's CI check) gets a scripted shell around the trace (batch-size free, see the module
        docstring), and this eager module is left as it is.
        """
        return ScriptedExport(trace_network(self), self.output)


class ScriptedExport(nn.Module):
    """A scripted shell around a traced :class:`ExportNetwork` (see :meth:`ExportNetwork.__prepare_scriptable__`)."""

    def __init__(self, traced: torch.jit.ScriptModule, output: str) -> None:
        super().__init__()
        self.network = traced
        self.output = output

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.network(images)


def trace_network(module: ExportNetwork) -> torch.jit.ScriptModule:
    """``module`` traced on the CPU in eval mode (a batch of :data:`_TRACE_BATCH` random images of its size); the
    module itself is put back in the training mode and on the device it had."""
    parameter = next(module.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    training = module.training
    size = module.image_size
    example = torch.rand(_TRACE_BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))
    module.cpu().eval()
    try:
        # the tracer warns about every Python branch on a tensor value; those branches depend on the class set and
        # the layout only (fixed in the export), and export_parity checks the result
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)
            return torch.jit.trace(module, example, check_trace=False)
    finally:
        module.to(device).train(training)


def export_network(
    network: nn.Module,
    path: str | os.PathLike,
    fmt: str = "torchscript",
    output: str = "logits",
    metadata: Mapping[str, Any] | None = None,
) -> tuple[Path, nn.Module]:
    """Trace ``network`` on the CPU and write it to ``path``.

    Args:
        network: the trained classifier (``image_size``).
        path: the file to write (without a suffix: ``.ts`` or ``.onnx`` is added).
        fmt: ``"torchscript"`` or ``"onnx"`` (input ``image``, output ``pred``, dynamic batch axis; opset 17).
        output: ``"logits"`` or ``"probabilities"``.
        metadata: bundle metadata stored in a TorchScript file (``metadata.json``, read back by MONAI's
            ``load_net_with_metadata``); ONNX files carry none.

    Returns:
        the file written and the eager module it was traced from (in eval mode, on the CPU).
    """
    fmt = look_up_option(fmt, tuple(EXPORT_FORMATS))
    module = (network if isinstance(network, ExportNetwork) else ExportNetwork(network, output)).cpu().eval()
    size = module.image_size
    example = torch.rand(_TRACE_BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))
    path = Path(path)
    path = path if path.suffix else path.with_suffix(EXPORT_FORMATS[fmt])
    path.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "torchscript":
        from monai.data import save_net_with_metadata

        save_net_with_metadata(trace_network(module), str(path), include_config_vals=False, meta_values=metadata)
        return path, module
    import importlib.util

    if importlib.util.find_spec("onnx") is None:
        raise ValueError(
            "ONNX export needs the onnx package: `pip install onnx onnxruntime`, or export with --format torchscript."
        )
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)  # see trace_network
        # torch warns that advanced indexing with negative indices would export wrongly; the command's parity check
        # against PyTorch says whether that applies (the export command prints its verdict)
        warnings.filterwarnings("ignore", message="Exporting aten::index operator", category=UserWarning)
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=["image"],
            output_names=["pred"],
            dynamic_axes={"image": {0: "batch"}, "pred": {0: "batch"}},
            opset_version=17,
            dynamo=False,
        )
    return path, module


def export_run(
    run_dir: str | os.PathLike,
    fmt: str = "torchscript",
    checkpoint: str = "final",
    output: str = "logits",
    path: str | os.PathLike | None = None,
) -> tuple[Path, nn.Module]:
    """Export a trained run's network (rebuilt with :func:`~monai_cilmp.engines.load_run`).

    Args:
        run_dir: the run folder.
        fmt: ``"torchscript"`` or ``"onnx"``.
        checkpoint: ``final``, ``best`` or ``last``.
        output: ``"logits"`` or ``"probabilities"``.
        path: the file to write (default ``<run>/models/model.ts`` or ``model.onnx``, written under the run's lock).

    Returns:
        the file written and the eager module it was traced from. A TorchScript file holds the run's bundle metadata
        (its ``configs/metadata.json``, with the output type of this export).
    """

    fmt = look_up_option(fmt, tuple(EXPORT_FORMATS))
    trained = load_run(run_dir, checkpoint)
    network = trained.build_network()
    run_meta = trained.directory / RUN_METADATA
    template = json.loads(run_meta.read_text(encoding="utf-8")) if run_meta.is_file() else None
    meta = bundle_metadata(network.class_names, network.image_size, output, template)
    if path is not None:
        return export_network(network, path, fmt, output, meta)
    with run_lock(trained.directory):  # no training may replace the run while its export is written into it
        return export_network(network, trained.directory / "models" / f"model{EXPORT_FORMATS[fmt]}", fmt, output, meta)


def run_test_images(
    run_dir: str | os.PathLike, network: nn.Module, limit: int = 8, checkpoint: str = "final"
) -> torch.Tensor | None:
    """Up to ``limit`` images of the test split of the datalist a run recorded, preprocessed as its evaluation does
    for ``network`` (the run's; its image size and normalisation), or ``None`` when the run recorded no datalist, it
    is gone, or its test split is empty."""

    trained = load_run(run_dir, checkpoint)
    meta = trained.metadata
    datalist_file = meta.get("datalist")
    if not datalist_file or not Path(datalist_file).is_file():
        return None
    items = load_datalist(datalist_file, trained.class_names).get("test") or []
    if not items:
        return None
    transform = get_preset(meta["preset"]).eval_transforms(
        keys="image", image_size=network.image_size, mean=network.image_mean, std=network.image_std
    )
    images = [torch.as_tensor(transform({"image": item["image"]})["image"]).float() for item in items[:limit]]
    return torch.stack(images).as_subclass(torch.Tensor)


def export_parity(path: str | os.PathLike, module: nn.Module, images: torch.Tensor) -> float:
    """Max |Δprobability| between an exported file and the eager ``module`` it came from on ``images``.

    ONNX files run with onnxruntime (``OptionalImportError`` when it is not installed), TorchScript with torch.
    """
    from monai.utils import optional_import

    path = Path(path)
    images = images.float().cpu()
    with torch.no_grad():
        expected = module(images)
        if path.suffix == ".onnx":
            ort, found = optional_import("onnxruntime")
            if not found:
                raise ValueError(f"Checking '{path}' needs onnxruntime: `pip install onnxruntime`.")
            session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            got = torch.as_tensor(session.run(None, {"image": images.numpy()})[0])
        else:
            got = torch.jit.load(str(path), map_location="cpu")(images)
    if getattr(module, "output", "logits") == "logits":
        expected, got = torch.softmax(expected, dim=-1), torch.softmax(got, dim=-1)
    return float((expected - got).abs().max())
