"""Overrides stay data: MONAI's component controls are refused as ids, ``_disabled_`` takes booleans only, and a
``--set`` value must have the type of the entry it replaces (one sentence naming the id, the type and an example)."""

from __future__ import annotations

import argparse

import pytest

from monai_cilmp.cli._bundle import _check_ids, _read, config_settings
from monai_cilmp.utils.config import RESERVED_KEYS, check_override_ids, literal_overrides


def test_reserved_keys_are_monais():
    from monai.bundle.config_item import ConfigComponent

    assert set(RESERVED_KEYS) == set(ConfigComponent.non_arg_keys)


@pytest.mark.parametrize("key", ["network_def#_target_", "train#handlers#0#_requires_", "recipe#_mode_", "x#_desc_"])
def test_component_controls_are_refused(key):
    with pytest.raises(ValueError, match=r"names _\w+_, which decides what code a component runs") as error:
        literal_overrides({key: "builtins.print"})
    assert str(error.value).startswith(f"'{key}' names")


def test_any_underscored_key_is_refused_and_disabled_takes_booleans_only():
    with pytest.raises(ValueError, match="decides what code a component runs"):
        check_override_ids(["network_def#_new_control_"])
    with pytest.raises(ValueError, match="_disabled_' switches a component on or off: give true or false, not 'yes'"):
        literal_overrides({"train#handlers#6#_disabled_": "yes"})
    with pytest.raises(ValueError, match="decides what code"):  # only as the last key, never a path through it
        literal_overrides({"train#_disabled_#x": True})
    assert literal_overrides({"train#handlers#6#_disabled_": True}) == {"train#handlers#6#_disabled_": True}


def test_set_target_never_runs_print(capsys):
    """The probe of issue 21: ``--set network_def#_target_=builtins.print`` is refused before any config is run."""
    parser = _read(["train.json"])
    settings = config_settings(argparse.Namespace(set=["network_def#_target_=builtins.print"]))
    _check_ids(parser, settings, ["train.json"], existing=settings)  # the id exists in train.json ...
    with pytest.raises(ValueError, match="network_def#_target_' names _target_"):
        literal_overrides(settings)  # ... but never reaches the parser
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    "item, message",
    [
        ("recipe#lr=abc", '--set recipe#lr expects a number, not "abc": e.g. --set recipe#lr=0.0025.'),
        (
            "recipe#max_epochs=2.5",
            "--set recipe#max_epochs expects a whole number, not 2.5: e.g. --set recipe#max_epochs=100.",
        ),
        (
            "network_def#conditional=1",
            "--set network_def#conditional expects true or false, not 1: e.g. --set network_def#conditional=true.",
        ),
        (
            "network_def#ctx_init=3",
            "--set network_def#ctx_init expects text, not 3: e.g. --set network_def#ctx_init=a photo of a.",
        ),
        ("imports=[]", "--set imports replaces an entry the bundle computes"),
        ("network=x", "--set network replaces an entry the bundle computes"),
    ],
)
def test_set_value_of_the_wrong_type_is_one_sentence(item, message):
    parser = _read(["train.json"])
    settings = config_settings(argparse.Namespace(set=[item]))
    with pytest.raises(ValueError) as error:
        _check_ids(parser, settings, ["train.json"], existing=settings)
    assert str(error.value).startswith(message), str(error.value)


def test_set_values_of_the_right_type_pass():
    parser = _read(["train.json"])
    items = ["recipe#lr=0.01", "recipe#gpa_std=0", "recipe#gpa_mean=3", "network_def#ctx_init=an image of"]
    settings = config_settings(argparse.Namespace(set=[*items, "train#handlers#6#_disabled_=true"]))
    _check_ids(parser, settings, ["train.json"], existing=settings)
    assert set(literal_overrides(settings)) == {item.split("=")[0] for item in items} | {"train#handlers#6#_disabled_"}
