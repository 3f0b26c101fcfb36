"""Device profiles: what the machine is, and which profile fits it."""

from __future__ import annotations

import os
from collections.abc import Mapping

import attrs
import psutil

from .._errors import ConfigError
from ._config_sections import Profile

__all__ = ["MachineFacts", "choose_profile", "detect_facts"]


@attrs.frozen(kw_only=True)
class MachineFacts:
    """The machine as psutil sees it, read once at start-up."""

    logical_cores: int
    physical_cores: int
    freq_mhz: float
    memory_total_gb: float
    memory_available_gb: float
    load1: float

    def as_dict(self) -> dict[str, float | int]:
        """The facts as a JSON-ready mapping."""
        return attrs.asdict(self)


def detect_facts() -> MachineFacts:
    """Read the machine's cores, frequency, memory and load with psutil."""
    freq = psutil.cpu_freq()
    mem = psutil.virtual_memory()
    return MachineFacts(
        logical_cores=psutil.cpu_count(logical=True) or 1,
        physical_cores=psutil.cpu_count(logical=False) or 1,
        freq_mhz=float(freq.current) if freq else 0.0,
        memory_total_gb=mem.total / 2**30,
        memory_available_gb=mem.available / 2**30,
        load1=os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0,
    )


def choose_profile(
    profiles: Mapping[str, Profile], wanted: str, facts: MachineFacts
) -> tuple[Profile, str]:
    """Pick a profile: ``wanted`` by name, or (``"auto"``) the most demanding one the machine meets.

    A profile fits when the machine has at least its ``min_cores`` logical
    cores and ``min_memory_gb`` of total memory; among those that fit, the
    one with the highest tick rate wins.

    Returns:
        The profile and a sentence saying why it was chosen.

    Raises:
        ConfigError: ``wanted`` names no profile.
    """
    if wanted != "auto":
        if wanted not in profiles:
            raise ConfigError(
                f"unknown profile {wanted!r} (known: {', '.join(sorted(profiles))}, auto)",
                key="supervisor.profile",
            )
        return profiles[wanted], f"profile {wanted!r} was asked for"
    fitting = [
        p
        for p in profiles.values()
        if facts.logical_cores >= p.min_cores and facts.memory_total_gb >= p.min_memory_gb
    ]
    if not fitting:
        lowest = min(profiles.values(), key=lambda p: p.tick_rate)
        return lowest, (
            f"no profile fits {facts.logical_cores} cores and "
            f"{facts.memory_total_gb:.1f} GB; using the lightest, {lowest.name!r}"
        )
    best = max(fitting, key=lambda p: (p.tick_rate, p.min_cores, p.name))
    return best, (
        f"detected {facts.logical_cores} logical cores and {facts.memory_total_gb:.1f} GB: "
        f"{best.name!r} is the most demanding profile that fits "
        f"(needs {best.min_cores} cores, {best.min_memory_gb:g} GB)"
    )
