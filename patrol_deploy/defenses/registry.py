"""`DEFENSES`: every baseline defense by name, built-ins and plugins alike through the `patrol_deploy.defenses`
entry-point group (setup.cfg declares the built-ins, PATROL's `adversarial_only` included, exactly as a plugin
package declares its own)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from patrol_deploy.registry import Registry

if TYPE_CHECKING:
    from patrol_deploy.defenses.base import Defense

DEFENSES: Registry[Defense] = Registry("defense", "patrol_deploy.defenses")
