"""Hydra's private APIs that danlu uses (orchestrator/hydra_internals.py), checked against the installed Hydra: an
upgrade that removes one fails here, naming it, instead of in a user's sweep."""

from __future__ import annotations

import importlib

import pytest
from omegaconf import OmegaConf

from orchestrator import hydra_internals

pytestmark = pytest.mark.contract


@pytest.mark.parametrize("name", hydra_internals.PRIVATE)
def test_each_private_hydra_api_danlu_uses_exists(name):
    module, cls, attr = name.rsplit(".", 2)
    assert callable(getattr(getattr(importlib.import_module(module), cls), attr)), name


def test_they_do_what_danlu_relies_on():
    from hydra.core.override_parser.overrides_parser import OverridesParser

    cfg = OmegaConf.create({"a": 1, "b": {"c": 2}})
    hydra_internals.apply_overrides_to_config(OverridesParser.create().parse_overrides(["a=3", "+b.d=4", "~b.c"]), cfg)
    assert OmegaConf.to_container(cfg) == {"a": 3, "b": {"d": 4}}
    assert hydra_internals.value_as_override_text("a b,c") == r"a\ b\,c"
    assert hydra_internals.value_as_override_text([1, "x"]) == "[1,x]"


def test_no_other_module_touches_hydras_private_api():
    from pathlib import Path

    root = Path(hydra_internals.__file__).parent
    users = [str(p.relative_to(root)) for p in root.rglob("*.py") if p.name != "hydra_internals.py"
             and ("hydra._internal" in p.read_text() or "._get_value_element_as_str" in p.read_text()
                  or "._apply_overrides_to_config" in p.read_text())]
    assert users == []
