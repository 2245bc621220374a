"""Fault-injection points for the fault suite (tests/faults/), off unless asked for.

CONVEYOR_FAULTS names the points that are armed (comma-separated); an armed point ends the
process at once with exit code 70, as a crash or a power cut would there. Not a user setting:
it exists so that the suite can prove what happens at the worst moments.
"""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)

ARMED = frozenset(p.strip() for p in os.environ.get("CONVEYOR_FAULTS", "").split(",") if p.strip())
EXIT_CODE = 70


def point(name: str) -> None:
    if name in ARMED:
        log.critical("fault injection: %s, exiting", name)
        logging.shutdown()
        os._exit(EXIT_CODE)
