"""Staged rollouts of feature flags with automatic rollback (issue 13, CONTRACT §11).

A capability layer above the core and below the server: a rollout raises a
flag's ``percent`` step by step through ``sup.flags``, off the tick, and
puts it back to its last safe percent when a named alert rule fires. Its
state is durable in ``state_dir/rollouts.json``. :func:`attach_rollouts`
plugs it into a run; :func:`rollouts_for` is how the server finds it.
"""

from ._manager import RolloutRefused, Rollouts, UnknownFlag
from ._plan import Rollout, RolloutInputError, State, parse_every, parse_steps
from ._service import attach_rollouts, rollouts_for

__all__ = [
    "Rollout",
    "RolloutInputError",
    "RolloutRefused",
    "Rollouts",
    "State",
    "UnknownFlag",
    "attach_rollouts",
    "parse_every",
    "parse_steps",
    "rollouts_for",
]
