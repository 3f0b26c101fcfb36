"""Staged rollouts of feature flags with automatic rollback (issue 13, CONTRACT §11).

A capability layer above the core and below the server: a rollout raises a
flag's ``percent`` step by step through ``sup.flags``, off the tick, and
puts it back to its last safe percent when a named alert rule fires. Its
state is durable in ``state_dir/rollouts.json``.

* :mod:`._plan`: one rollout's plan, state and transitions, pure; the input
  checks the CLI shares (light: the client commands import it without trio);
* :mod:`._file`: the durable record;
* :mod:`._manager`: the commands, automatic steps and rollbacks of one supervisor;
* :mod:`._service`: :func:`~._service.attach_rollouts` plugs it into a run, and
  :func:`~._service.rollouts_for` is how the server finds it.

This ``__init__`` imports nothing, so ``supervisor rollout start --steps``
can check its input without loading trio.
"""
