"""`ATTACKS`: every model-inversion attack by name, built-ins and plugins alike through the `patrol_deploy.attacks`
entry-point group (setup.cfg declares the built-ins exactly as a plugin package declares its own)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from patrol_deploy.registry import Registry

if TYPE_CHECKING:
    from patrol_deploy.attacks.suite import Attack

ATTACKS: Registry[Attack] = Registry("attack", "patrol_deploy.attacks")
