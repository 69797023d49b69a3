"""Every use of Hydra's private APIs, in this one module (as orchestrator/ray_internals.py does for Ray's).

Hydra has no public way to do two things danlu needs; each function here says why. The names are listed in
PRIVATE, and tests/test_hydra_internals.py checks each against the installed Hydra, failing with the name when an
upgrade removes one (hydra-core is pinned in pyproject.toml for the same reason).
"""

from __future__ import annotations

PRIVATE = (
    "hydra._internal.config_loader_impl.ConfigLoaderImpl._apply_overrides_to_config",
    "hydra.core.override_parser.types.Override._get_value_element_as_str",
)


def apply_overrides_to_config(overrides: list, cfg) -> None:
    """Hydra's last composition step (plain key=value, +key=value, ~key on a composed config), in place. Public
    Hydra only composes from the defaults tree: its slow part, which a sweep would otherwise repeat for every
    fixed override (orchestrator/config/compose.apply_overrides). `overrides`: parsed, OverridesParser.parse_overrides."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl

    ConfigLoaderImpl._apply_overrides_to_config(overrides, cfg)


def value_as_override_text(value) -> str:
    """A value as Hydra's own serializer writes it in an override (quoting and escaping its grammar's special
    characters). Hydra exposes it only as a private static method of Override."""
    from hydra.core.override_parser.types import Override

    return Override._get_value_element_as_str(value)
