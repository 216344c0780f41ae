"""Passing data to MONAI's config parser so that it stays data.

MONAI's ``ConfigParser`` evaluates any string that starts with ``$``, resolves ``@`` references and ``%`` macros,
and walks lists and dicts to do so, also in values given as overrides. Class names, paths, presets and checkpoint
metadata come from users and data sets; a folder named ``$__import__('os').system(...)`` must not run. Every such
value is handed to the parser as a fixed expression that decodes a base64 text (whose alphabet has none of
``$ @ % #``) back into the JSON value: the parser sees only our own code, and the value arrives unchanged, whatever
characters it holds.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

__all__ = ["RESERVED_KEYS", "config_literal", "literal_overrides", "check_override_ids"]

#: the keys by which MONAI's config machinery decides what runs: which callable a component is (``_target_``), how it is
#: called (``_mode_``), what is evaluated before it (``_requires_``), its description (``_desc_``) and whether it is
#: built (``_disabled_``, which an override may switch with a boolean only); ``ConfigComponent.non_arg_keys``
RESERVED_KEYS = ("_target_", "_requires_", "_mode_", "_desc_", "_disabled_")

_DECODE = "$__import__('json').loads(__import__('base64').b64decode('{}').decode('utf-8'))"


def config_literal(value: Any) -> Any:
    """``value`` in a form MONAI's config parser returns unchanged and never interprets.

    Numbers, booleans and ``None`` are returned as they are (the parser does not interpret them); strings, lists
    and dicts (anything JSON can hold) become a fixed decoding expression.

    Raises:
        TypeError: ``value`` is not JSON-serialisable.
    """
    if value is None or isinstance(value, (bool, int, float)):
        return value
    try:
        text = json.dumps(value, ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"Cannot pass {type(value).__name__} {value!r} to a bundle config as data: {e}.") from e
    return _DECODE.format(base64.b64encode(text.encode("utf-8")).decode("ascii"))


def _reserved(part: str) -> bool:
    """Whether a config key is one of MONAI's controls (:data:`RESERVED_KEYS`, or any other ``_name_`` key: MONAI
    reserves that form)."""
    return part in RESERVED_KEYS or (len(part) > 2 and part.startswith("_") and part.endswith("_"))


def check_override_ids(ids: Mapping[str, Any] | list[str]) -> None:
    """Refuse override ids that are not plain config paths (``name`` or ``name#key#...`` of identifiers/indices), or
    that name one of MONAI's controls of a component (``_target_``, ``_requires_``, ``_mode_``, ``_desc_``: which
    callable runs and how); ``_disabled_`` may be switched, with a boolean only (when ``ids`` is a mapping of values).

    Override *ids* select what is changed; one made from data (e.g. a hyper-parameter name read from a checkpoint)
    could otherwise address any part of the config, and an override of ``_target_`` would choose the code that runs.

    Raises:
        ValueError: an id with other characters or naming a control, naming it.
    """
    for key in ids:
        parts = str(key).split("#")
        if not all(part.isidentifier() or part.isdigit() for part in parts):
            raise ValueError(f"'{key}' is not a valid config id: use names of letters, digits and '_' joined by '#'.")
        control = next((part for part in parts if _reserved(part)), None)
        if control == "_disabled_" and parts[-1] == control:
            if isinstance(ids, Mapping) and not isinstance(ids[key], bool):
                raise ValueError(f"'{key}' switches a component on or off: give true or false, not {ids[key]!r}.")
        elif control is not None:
            raise ValueError(
                f"'{key}' names {control}, which decides what code a component runs: overrides change data only "
                "(the component's arguments, or its _disabled_ switch with true/false)."
            )


def literal_overrides(overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Bundle overrides whose values are all data (see :func:`config_literal`), after checking their ids."""
    check_override_ids(overrides)
    return {key: config_literal(value) for key, value in overrides.items()}
