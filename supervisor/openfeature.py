"""The supervisor as an OpenFeature provider: game code written against OpenFeature reads our flags.

Install the extra (``pip install 'tick-supervisor[openfeature]'``, the
``openfeature-sdk`` package), then, once the supervisor is built::

    from openfeature import api
    from supervisor.openfeature import SupervisorProvider

    api.set_provider(SupervisorProvider(sup.flags))
    client = api.get_client()
    client.get_boolean_value("new_shop", False, EvaluationContext(targeting_key="42"))
    client.get_string_value("shop_layout", "a", EvaluationContext(targeting_key="42"))

A boolean is ``[flags.NAME]`` (``ctx.flag``), a string is the arm of
``[experiments.NAME]`` (``ctx.variant``), for the targeting key as the player
id: the same stable hash, so the answers are the same (the int 42 and the key
``"42"`` are one player). Without a targeting key a flag answers for everyone
and an experiment is an error (``TARGETING_KEY_MISSING``: the default is
returned). Unknown names are ``FLAG_NOT_FOUND``; asking a flag for an
integer, float or object, or an experiment for a boolean, is
``TYPE_MISMATCH``. Evaluation happens in the caller's thread, so call it
from the tick (a system's step) as ``ctx.flag`` is called: ``Flags`` is the
tick's object and is not locked.

This module is the only one that imports ``openfeature``; ``import supervisor``
does not load it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NoReturn

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import (
    FlagNotFoundError,
    TargetingKeyMissingError,
    TypeMismatchError,
)
from openfeature.flag_evaluation import FlagResolutionDetails, Reason
from openfeature.provider import AbstractProvider, Metadata

from ._core._flags import UnknownFlagError

if TYPE_CHECKING:
    from openfeature.flag_evaluation import FlagValueType

    from ._core._flags import Flags

__all__ = ["SupervisorProvider"]


class SupervisorProvider(AbstractProvider):
    """An OpenFeature provider answering from a supervisor's ``Flags`` (``sup.flags``)."""

    def __init__(self, flags: Flags) -> None:
        super().__init__()
        self._flags = flags

    def get_metadata(self) -> Metadata:
        """The provider's name, ``supervisor``."""
        return Metadata(name="supervisor")

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        """``ctx.flag(flag_key, targeting_key)``.

        Raises:
            FlagNotFoundError: no such flag.
            TypeMismatchError: the key names an experiment (a string).
        """
        key = _targeting_key(evaluation_context)
        try:
            value = self._flags.flag(flag_key, key)
        except UnknownFlagError as exc:
            if self._flags.is_experiment(flag_key):
                raise TypeMismatchError(
                    f"{flag_key!r} is an experiment: read it as a string"
                ) from None
            raise FlagNotFoundError(str(exc)) from None
        return FlagResolutionDetails(
            value=value,
            variant="on" if value else "off",
            reason=Reason.STATIC if key is None else Reason.TARGETING_MATCH,
        )

    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[str]:
        """``ctx.variant(flag_key, targeting_key)``: the arm's name.

        Raises:
            FlagNotFoundError: no such experiment.
            TypeMismatchError: the key names a flag (a boolean).
            TargetingKeyMissingError: no targeting key (an arm is per player).
        """
        key = _targeting_key(evaluation_context)
        if not self._flags.is_experiment(flag_key):
            if self._flags.is_flag(flag_key):
                raise TypeMismatchError(f"{flag_key!r} is a flag: read it as a boolean")
            raise FlagNotFoundError(f"no experiment {flag_key[:128]!r}")
        if key is None:
            raise TargetingKeyMissingError(f"experiment {flag_key!r} needs a targeting key")
        arm = self._flags.variant(flag_key, key)
        return FlagResolutionDetails(value=arm, variant=arm, reason=Reason.SPLIT)

    def resolve_integer_details(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[int]:
        """Never an integer here.

        Raises:
            TypeMismatchError: the key names a flag or an experiment.
            FlagNotFoundError: it names neither.
        """
        self._not_this_type(flag_key, "an integer")

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        """Never a float here (see ``resolve_integer_details``)."""
        self._not_this_type(flag_key, "a float")

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        """Never an object here (see ``resolve_integer_details``)."""
        self._not_this_type(flag_key, "an object")

    def _not_this_type(self, flag_key: str, what: str) -> NoReturn:
        if self._flags.is_flag(flag_key) or self._flags.is_experiment(flag_key):
            raise TypeMismatchError(
                f"{flag_key!r} is a boolean flag or a string experiment, not {what}"
            )
        raise FlagNotFoundError(f"no flag or experiment {flag_key[:128]!r}")


def _targeting_key(context: EvaluationContext | None) -> str | None:
    """The targeting key (the player id), or None; a non-string key is refused as missing."""
    key = None if context is None else context.targeting_key
    return key if isinstance(key, str) else None
