#!/usr/bin/env python
"""Run MONAI model-zoo's pre-merge checks on a bundle folder, offline, with MONAI's own calls.

Model-zoo (github.com/Project-MONAI/model-zoo) checks a submitted bundle with ``ci/verify_bundle.py`` (``-m min``,
then the full mode on a GPU runner), ``ci/get_bundle_requirements.py`` and its pre-commit hooks. Its scripts cannot
be fetched in CI here, so each check is reproduced with the MONAI call model-zoo makes, and named after the
model-zoo function it stands for:

==================  =====================================================================================
check               model-zoo
==================  =====================================================================================
``layout``          ``verify_bundle.verify_bundle_directory``: ``configs/metadata.json``, ``LICENSE``,
                    ``models/model.pt``, ``configs/inference.json``; ``large_files.yml`` entries (``utils.
                    download_large_files``: MONAI's ``download_url``, which checks a present file's hash; a
                    missing one would be downloaded, which this offline check reports instead)
``version``         ``verify_bundle.verify_version_changes``: ``version`` is in ``changelog`` (the comparison
                    with model-zoo's ``model_info.json`` needs model-zoo itself)
``metadata``        ``verify_bundle.verify_metadata_format``: MONAI's ``verify_metadata`` against the schema
                    (``../shared/schemas/meta_schema_20240725.json``: model-zoo's ``utils.prepare_schema``
                    downloads the same file)
``requirements``    ``get_bundle_requirements.get_requirements``: the ``name==version`` pins it writes; a pin of
                    a package that no public index serves (this project) makes its ``pip install`` fail
``precommit``       ``.pre-commit-config.yaml``: ``check-added-large-files --maxkb=1024`` (files not listed in
                    ``large_files.yml``), ``pretty-format-json --indent=4 --no-sort-keys``,
                    ``end-of-file-fixer``, ``trailing-whitespace``
``properties``      ``verify_bundle.verify_bundle_properties``: MONAI's ``create_workflow`` of
                    ``inference.json`` and ``check_properties`` with MONAI's ``MetaProperties`` and
                    ``InferProperties`` (model-zoo runs it only when metadata declares ``supported_apps``; run
                    here either way)
``net_in_out``      ``verify_bundle.verify_data_shape``: MONAI's ``verify_net_in_out`` of ``network_def`` with the
                    shapes of ``configs/metadata.json`` (full mode)
``torchscript``     ``verify_bundle.verify_torchscript``: MONAI's ``ckpt_export`` of ``network_def`` with
                    ``models/model.pt``, scripted (model-zoo passes no ``use_trace``), and ``torch.jit.load``
                    of ``models/model.ts`` when there is one (full mode); the export is also compared with the
                    eager network here
==================  =====================================================================================

Usage: ``python scripts/model_zoo_check.py BUNDLE [--mode min|full] [--schema FILE]``; prints one line per check
and exits 1 when one fails. :func:`run_checks` returns the outcomes for tests.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DEFAULT_SCHEMA = REPO.parent / "shared" / "schemas" / "meta_schema_20240725.json"
#: model-zoo's pre-commit limit (``check-added-large-files --maxkb=1024``)
MAX_KB = 1024
#: packages no public index serves: a pin of them makes model-zoo's requirements file uninstallable
NOT_ON_AN_INDEX = ("monai-cilmp", "monai_cilmp")
MIN_CHECKS = ("layout", "version", "metadata", "requirements", "precommit")
FULL_CHECKS = (*MIN_CHECKS, "properties", "net_in_out", "torchscript")


class CheckFailed(Exception):
    """One model-zoo check failed; the message says which rule."""


def _find(folder: Path, stem: str) -> Path | None:
    """``<stem>.json``, ``.yaml`` or ``.yml`` in ``folder`` (model-zoo's ``_find_bundle_file``)."""
    for suffix in ("json", "yaml", "yml"):
        if (folder / f"{stem}.{suffix}").is_file():
            return folder / f"{stem}.{suffix}"
    return None


def large_files(bundle: Path) -> list[dict[str, Any]]:
    """The entries of the bundle's ``large_files`` file, read with MONAI's ``ConfigParser`` as model-zoo does."""
    from monai.bundle import ConfigParser

    path = _find(bundle, "large_files")
    if path is None:
        return []
    parser = ConfigParser()
    parser.read_config(str(path))
    return list(parser.get()["large_files"])


def check_layout(bundle: Path) -> str:
    from monai.apps.utils import check_hash

    notes = []
    for entry in large_files(bundle):
        target = bundle / entry["path"]
        if not target.is_file():
            raise CheckFailed(f"{entry['path']} (large_files) is missing: model-zoo would download {entry['url']}")
        if entry.get("hash_val") and not check_hash(str(target), entry["hash_val"], entry.get("hash_type", "md5")):
            raise CheckFailed(f"{entry['path']} does not match its {entry.get('hash_type')} in large_files")
        notes.append(entry["path"])
    for required in ("configs/metadata.json", "LICENSE", "models/model.pt"):
        if not (bundle / required).is_file():
            raise CheckFailed(f"necessary file {required} is not existing.")
    if _find(bundle / "configs", "inference") is None:
        raise CheckFailed("inference config file is not existing.")
    return f"necessary files present; large files verified by hash: {', '.join(notes) or 'none'}"


def _metadata(bundle: Path) -> dict[str, Any]:
    return json.loads((bundle / "configs" / "metadata.json").read_text(encoding="utf-8"))


def check_version(bundle: Path) -> str:
    meta = _metadata(bundle)
    for key in ("version", "changelog"):
        if key not in meta:
            raise CheckFailed(f"'{key}' is missing in configs/metadata.json")
    if meta["version"] not in meta["changelog"]:
        raise CheckFailed(f"version number: {meta['version']} is missing in 'changelog'")
    return f"version {meta['version']} is in the changelog"


def check_metadata(bundle: Path, schema: Path) -> str:
    from monai.bundle import verify_metadata

    if not schema.is_file():
        raise CheckFailed(f"schema '{schema}' not found: give --schema (model-zoo downloads it from the metadata URL)")
    verify_metadata(meta_file=str(bundle / "configs" / "metadata.json"), filepath=str(schema))
    return f"verify_metadata passed against {schema.name}"


def requirement_pins(meta: dict[str, Any]) -> list[str]:
    """The lines ``get_bundle_requirements.py`` writes for ``meta`` (without ``ALLOW_MONAI_RC``)."""
    pins = [
        f"{name}=={meta[key]}"
        for key, name in (("monai_version", "monai"), ("pytorch_version", "torch"), ("numpy_version", "numpy"))
        if key in meta
    ]
    for key in ("optional_packages_version", "required_packages_version"):
        pins += [f"{name}=={version}" for name, version in (meta.get(key) or {}).items()]
    return pins


def check_requirements(bundle: Path) -> str:
    from importlib import metadata as importlib_metadata

    from packaging.version import InvalidVersion, Version

    pins = requirement_pins(_metadata(bundle))
    for pin in pins:
        name, version = pin.split("==")
        if name in NOT_ON_AN_INDEX:
            raise CheckFailed(f"'{pin}' would be pinned, but no public index serves {name}: pip install would fail")
        try:
            if Version(version).local is not None:
                raise CheckFailed(f"'{pin}' has a local build tag that indexes do not serve")
        except InvalidVersion:
            raise CheckFailed(f"'{pin}' is not a valid version") from None
    differs = []
    for pin in pins:
        name, version = pin.split("==")
        try:
            installed = importlib_metadata.version(name).split("+")[0]
        except importlib_metadata.PackageNotFoundError:
            installed = "not installed"
        if installed != version:
            differs.append(f"{name} {version} (here {installed})")
    note = f"; differs from this environment: {', '.join(differs)}" if differs else "; all as installed here"
    return f"{len(pins)} pins, all installable{note}"


def _committed_files(bundle: Path) -> list[Path]:
    listed = {str(entry["path"]) for entry in large_files(bundle)}
    return sorted(
        p
        for p in bundle.rglob("*")
        if p.is_file() and p.relative_to(bundle).as_posix() not in listed and "__pycache__" not in p.parts
    )


def check_precommit(bundle: Path) -> str:
    too_large, badly_formatted, whitespace = [], [], []
    files = _committed_files(bundle)
    for path in files:
        relative = path.relative_to(bundle).as_posix()
        if path.stat().st_size > MAX_KB * 1024:
            too_large.append(f"{relative} ({path.stat().st_size / 1024:.0f} kB)")
            continue
        if path.suffix in (".pt", ".ts", ".png", ".safetensors"):
            continue
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".json":
            pretty = json.dumps(json.loads(text), indent=4, ensure_ascii=True, separators=(",", ": ")) + "\n"
            if text != pretty:
                badly_formatted.append(relative)
        if text and (not text.endswith("\n") or text.endswith("\n\n")):
            whitespace.append(f"{relative} (end of file)")
        if any(line != line.rstrip() for line in text.splitlines()):
            whitespace.append(f"{relative} (trailing whitespace)")
    problems = []
    if too_large:
        problems.append(f"over {MAX_KB} kB and not in large_files: {', '.join(too_large)}")
    if badly_formatted:
        problems.append(f"not as pretty-format-json --indent=4 writes: {', '.join(badly_formatted)}")
    if whitespace:
        problems.append(", ".join(whitespace))
    if problems:
        raise CheckFailed("; ".join(problems))
    largest = max(files, key=lambda p: p.stat().st_size)
    return (
        f"{len(files)} committed files, largest {largest.relative_to(bundle).as_posix()} "
        f"({largest.stat().st_size / 1024:.1f} kB)"
    )


def check_properties(bundle: Path) -> str:
    from monai.bundle import create_workflow
    from monai.bundle.properties import InferProperties, MetaProperties

    workflow = create_workflow(
        workflow_type="inference",
        bundle_root=str(bundle),
        config_file=str(_find(bundle / "configs", "inference")),
        logging_file=str(bundle / "configs" / "logging.conf"),
        meta_file=str(bundle / "configs" / "metadata.json"),
    )
    workflow.properties = {**MetaProperties, **InferProperties}
    missing = workflow.check_properties()
    if missing:
        raise CheckFailed(f"check properties for workflow failed: {missing}")
    declared = _metadata(bundle).get("supported_apps")
    scope = f"supported_apps {declared}" if declared else "no supported_apps declared: model-zoo skips this check"
    return f"inference workflow has every MetaProperties and InferProperties entry ({scope})"


def check_net_in_out(bundle: Path) -> str:
    from monai.bundle import verify_net_in_out

    verify_net_in_out(
        net_id="network_def",
        meta_file=str(bundle / "configs" / "metadata.json"),
        config_file=str(_find(bundle / "configs", "inference")),
        bundle_root=str(bundle),
    )
    image = _metadata(bundle)["network_data_format"]["inputs"]["image"]["spatial_shape"]
    return f"network_def takes {image} images and gives the metadata's output channels"


def check_torchscript(bundle: Path) -> str:
    import torch
    from monai.bundle import ConfigParser, ckpt_export

    config = str(_find(bundle / "configs", "inference"))
    exported = bundle / "models" / "verify_model.ts"
    try:
        ckpt_export(
            net_id="network_def",
            filepath=str(exported),
            ckpt_file=str(bundle / "models" / "model.pt"),
            meta_file=str(bundle / "configs" / "metadata.json"),
            config_file=config,
            bundle_root=str(bundle),
        )
        scripted = torch.jit.load(str(exported), map_location="cpu")
    finally:
        exported.unlink(missing_ok=True)
    provided = bundle / "models" / "model.ts"
    if provided.is_file():
        torch.jit.load(str(provided), map_location="cpu")
    parser = ConfigParser()
    parser.read_config(config)
    parser["bundle_root"] = str(bundle)
    network = parser.get_parsed_content("network_def")
    network.load_state_dict(torch.load(bundle / "models" / "model.pt", map_location="cpu", weights_only=True))
    shape = _metadata(bundle)["network_data_format"]["inputs"]["image"]["spatial_shape"]
    images = torch.rand(3, 3, *shape, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        difference = float((scripted(images) - network.eval()(images)).abs().max())
    if difference > 1e-4:
        raise CheckFailed(f"the scripted export differs from the eager network by {difference:.2e}")
    return f"ckpt_export (scripted) of network_def with models/model.pt; max |logit difference| {difference:.1e}"


CHECKS: dict[str, Callable[..., str]] = {
    "layout": check_layout,
    "version": check_version,
    "metadata": check_metadata,
    "requirements": check_requirements,
    "precommit": check_precommit,
    "properties": check_properties,
    "net_in_out": check_net_in_out,
    "torchscript": check_torchscript,
}


def _reason(error: BaseException) -> str:
    """One line: the error and, for MONAI's "Failed to evaluate" wrappers, the error underneath."""
    messages = []
    while error is not None and len(messages) < 4:
        messages.append(" ".join(f"{type(error).__name__}: {error}".split()))
        error = error.__cause__
    return messages[0] if len(messages) == 1 else f"{messages[0]} <- {messages[-1]}"


def run_checks(bundle: str | os.PathLike, mode: str = "full", schema: str | os.PathLike | None = None) -> dict:
    """Run model-zoo's checks of ``mode`` on ``bundle``: ``{check: (passed, message)}``, in model-zoo's order."""
    bundle = Path(bundle).resolve()
    schema = Path(schema) if schema is not None else DEFAULT_SCHEMA
    results: dict[str, tuple[bool, str]] = {}
    sys.path.insert(0, str(bundle))  # as verify_bundle.py does, for bundles with their own code
    try:
        for name in FULL_CHECKS if mode == "full" else MIN_CHECKS:
            try:
                message = CHECKS[name](bundle, schema) if name == "metadata" else CHECKS[name](bundle)
                results[name] = (True, message)
            except Exception as e:  # noqa: BLE001 - each check's failure is reported, the others still run
                results[name] = (False, _reason(e))
    finally:
        sys.path.remove(str(bundle))
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("bundle", help="the bundle folder (with models/model.pt)")
    parser.add_argument("--mode", choices=("min", "full"), default="full", help="verify_bundle.py's mode")
    parser.add_argument("--schema", default=str(DEFAULT_SCHEMA), help="the metadata schema file")
    args = parser.parse_args(argv)
    results = run_checks(args.bundle, args.mode, args.schema)
    for name, (passed, message) in results.items():
        print(f"{'PASS' if passed else 'FAIL'} {name:13s} {message}")
    return 0 if all(passed for passed, _ in results.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
