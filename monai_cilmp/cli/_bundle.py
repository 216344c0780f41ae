"""What the train/evaluate/predict commands share: the CILMP bundle and how a command line becomes overrides.

Override values are data (class names, paths, presets, model names, checkpoint metadata): they are always handed to
MONAI's config parser through :func:`~monai_cilmp.utils.config.literal_overrides`, never as raw strings that its
``$``/``@``/``%`` syntax would interpret.
"""

from __future__ import annotations

import argparse
import json
import warnings
from collections.abc import Collection, Mapping
from typing import Any

from monai_cilmp.utils.bundle import BUNDLE_DIR, bundle_config

__all__ = [
    "BUNDLE_DIR",
    "add_backbone_arguments",
    "add_config_arguments",
    "add_runtime_arguments",
    "apply_runtime",
    "bundle_config",
    "class_overrides",
    "config_settings",
    "from_run_configs",
    "parse_bundle",
    "quick_gelu_option",
    "run_bundle",
]


def add_backbone_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--backbone", default="ViT-B-16", help="open_clip model name, hf-hub: id or local folder (default: ViT-B-16)"
    )
    parser.add_argument(
        "--pretrained",
        default="openai",
        help="pretrained tag or checkpoint file; 'none': random weights, for tests only (default: openai)",
    )
    parser.add_argument("--offline", action="store_true", help="never download backbone weights")
    parser.add_argument(
        "--quick-gelu",
        choices=("auto", "true", "false"),
        default="auto",
        help="the backbone's MLP activation: QuickGELU (OpenAI's weights) or GELU; auto: from the weights' provenance",
    )


def quick_gelu_option(args: argparse.Namespace) -> bool | None:
    """``--quick-gelu`` as ``load_backbone``'s ``quick_gelu`` (``None``: from the weights' provenance)."""
    value = getattr(args, "quick_gelu", "auto")
    return None if value == "auto" else value == "true"


def add_runtime_arguments(parser: argparse.ArgumentParser) -> None:
    """``--device``, ``--threads`` and ``--workers``: where and with how many CPU threads and loader processes."""
    parser.add_argument("--device", help="cpu, cuda, cuda:1, ... (default: the first GPU if there is one, else cpu)")
    parser.add_argument("--threads", type=int, help="CPU threads of torch (default: chosen for the machine)")
    parser.add_argument("--workers", type=int, help="data loading processes (default: chosen for the machine)")


def apply_runtime(args: argparse.Namespace) -> dict[str, Any]:
    """Set torch's threads for ``args`` and return the bundle overrides of its device and loader workers."""
    # lazy imports here and below, even of light modules (logging alone costs ~5 ms): `--help` and argument errors
    # load neither torch nor MONAI and stay fast
    from monai_cilmp.utils.runtime import configure_runtime

    for option in ("threads", "workers"):
        value = getattr(args, option, None)
        if value is not None and value < (1 if option == "threads" else 0):
            raise ValueError(f"--{option} must be {'at least 1' if option == 'threads' else '0 or more'}, not {value}.")
    runtime = configure_runtime(
        getattr(args, "device", None), getattr(args, "threads", None), getattr(args, "workers", None)
    )
    return {"device": str(runtime.device), "num_workers": runtime.workers, "num_threads": runtime.threads}


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """``--set ID=VALUE``: change one entry of the bundle config (a handler, a transform, a recipe value)."""
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="ID=VALUE",
        help="change one bundle config entry, e.g. --set train#handlers#6#_disabled_=true (no TensorBoard loss curve; "
        "see the bundle README's handler and transform tables); VALUE is read as JSON (true, 3, 0.1, [1, 2]), "
        "anything else as text, of the type of the entry it replaces, and is always data, never an expression: "
        "ids naming what code runs (_target_, _requires_, _mode_, _desc_) are refused, _disabled_ takes true/false; "
        "repeat for several",
    )


def config_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The ``--set ID=VALUE`` entries as overrides (values parsed as JSON when they are JSON, else text)."""
    settings: dict[str, Any] = {}
    for item in getattr(args, "set", None) or []:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set '{item}' is not ID=VALUE: write e.g. --set recipe#val_interval=5.")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        settings[key.strip()] = value
    return settings


def class_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """``class_names`` / ``preset`` / ``ordinal`` from ``--dataset`` or ``--classes`` (else the datalist's)."""
    out: dict[str, Any] = {}
    if getattr(args, "dataset", None):
        from monai_cilmp.data import get_dataset

        spec = get_dataset(args.dataset)
        out.update(class_names=list(spec.class_names), preset=spec.preset, ordinal=spec.ordinal)
        out["dataset_name"] = spec.name
    if getattr(args, "classes", None):
        out["class_names"] = list(args.classes)
    if getattr(args, "preset", None):
        from monai.utils import look_up_option

        from monai_cilmp.transforms import list_presets

        try:
            out["preset"] = look_up_option(args.preset, list_presets())
        except ValueError:
            raise ValueError(f"Unknown preset '{args.preset}': use one of {', '.join(list_presets())}.") from None
    return out


def _read(configs: list[str]):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([bundle_config(c) for c in configs])
    return parser


def _defined(parser: Any, key: str) -> bool:
    """Whether ``key`` names an entry of the configs (or the ``_disabled_`` switch of an entry that exists)."""
    parent, _, last = key.rpartition("#")
    try:
        return key in parser or (last == "_disabled_" and isinstance(parser[parent], dict))
    except (KeyError, IndexError, TypeError, ValueError):
        return False


def _check_ids(parser: Any, overrides: Mapping[str, Any], configs: list[str], existing: Collection[str] = ()) -> None:
    """Every override must change something the configs define (a typo would otherwise be silently ignored); the
    ``existing`` ones (a user's ``--set``) must name an entry that is there, down to the last key."""
    unknown = [
        key
        for key in overrides
        if key.split("#")[0] not in parser.config or (key in existing and not _defined(parser, key))
    ]
    if unknown:
        raise ValueError(
            f"Unknown bundle setting(s) {', '.join(unknown)} for configs {', '.join(configs)}: check each id against "
            f"those files in {BUNDLE_DIR / 'configs'}."
        )
    for key in existing:
        if key in overrides and key in parser and not key.endswith("#_disabled_"):  # a switch: true/false, checked
            _check_setting(key, parser[key], overrides[key])


def _is_expression(value: Any) -> bool:
    """Whether a raw config value is (or holds) code or references that the config parser evaluates."""
    if isinstance(value, str):
        return value.startswith(("$", "@", "%"))
    if isinstance(value, Mapping):
        return "_target_" in value or any(_is_expression(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_is_expression(v) for v in value)
    return False


def _check_setting(key: str, current: Any, value: Any) -> None:
    """A ``--set`` value must be of the type of the entry it replaces (a number for a number, true/false for a switch,
    text for text), and may not replace an entry the bundle computes (an expression, a component): that would fail
    later, deep in MONAI or torch, with a sentence that names neither the id nor the fix."""
    if _is_expression(current):
        raise ValueError(
            f"--set {key} replaces an entry the bundle computes ({json.dumps(current)[:60]}): set a plain value inside "
            "it instead (a component's argument, e.g. --set recipe#lr=0.001) or use the command's own option."
        )
    if current is None:
        return
    if isinstance(current, bool):
        expected, example, fits = "true or false", "true", isinstance(value, bool)
    elif isinstance(current, int):
        expected, example, fits = "a whole number", str(current), isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(current, float):
        expected, example = "a number", str(current)
        fits = isinstance(value, (int, float)) and not isinstance(value, bool)
    elif isinstance(current, str):
        expected, example, fits = "text", current, isinstance(value, str)
    elif isinstance(current, (list, tuple)):
        expected, example, fits = "a JSON list", json.dumps(current), isinstance(value, list)
    else:
        expected, example, fits = "a JSON object", json.dumps(current), isinstance(value, dict)
    if not fits:
        raise ValueError(f"--set {key} expects {expected}, not {json.dumps(value)}: e.g. --set {key}={example}.")


def from_run_configs(preset: str) -> list[str]:
    """The bundle configs that predict with a run folder: ``inference.json``, the overlay of the run's modality preset
    (its listed transforms, ``presets/<preset>.json``; the name is looked up among the presets, never used as given)
    and ``from_run.json``."""
    from monai_cilmp.transforms import get_preset

    return ["inference.json", f"presets/{get_preset(preset).name}.json", "from_run.json"]


def parse_bundle(configs: list[str], overrides: Mapping[str, Any]):
    """A ``ConfigParser`` over the bundle configs with ``overrides`` (data, see the module) applied."""
    from monai_cilmp.utils.config import literal_overrides

    parser = _read(configs)
    _check_ids(parser, overrides, configs)
    parser.update(literal_overrides(overrides))
    return parser


def run_bundle(configs: list[str], overrides: Mapping[str, Any], existing: Collection[str] = ()) -> None:
    """``python -m monai.bundle run`` on the bundle configs with ``overrides`` (data, see the module); the ids in
    ``existing`` must name entries the configs have."""
    from monai.bundle import run

    from monai_cilmp.utils.config import literal_overrides
    from monai_cilmp.utils.logs import drop_log_messages

    _check_ids(_read(configs), overrides, configs, existing)
    # MONAI warns that a config's "$" values are evaluated and that method overlays sit in a subfolder: true of any
    # config, said of the ones this package ships, whose overrides are literals (literal_overrides)
    with warnings.catch_warnings(), drop_log_messages("monai.bundle.workflows", "Not all config files are in"):
        warnings.filterwarnings("ignore", message="parsing config_file", category=UserWarning)
        run(
            run_id="run",
            init_id="initialize",
            config_file=[bundle_config(c) for c in configs],
            logging_file=bundle_config("logging.conf"),
            bundle_root=str(BUNDLE_DIR),
            **literal_overrides(overrides),
        )
