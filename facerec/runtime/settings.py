"""Validated settings for model constructors: a config section plus keyword overrides."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from facerec.errors import ConfigError
from facerec.runtime.engines import ENGINE_ALIAS, engine_alias

S = TypeVar("S", bound=BaseModel)


class InvalidSettingError(ConfigError, ValueError):
    """A model constructor got a value its config section rejects (also a ``ValueError``,
    as for any bad argument)."""


def merge_section(cls: type[S], section: S | None, overrides: dict[str, Any], what: str) -> S:
    """``section`` (or the section's defaults) with the non-``None`` ``overrides`` applied,
    validated by the section's own pydantic model, so every default and bound lives in
    :mod:`facerec.config` only.

    Raises:
        InvalidSettingError: an unknown name or a value out of bounds; the message names it.
    """
    from facerec.config import format_errors

    data = (section if section is not None else cls()).model_dump()
    data.update({k: v for k, v in overrides.items() if v is not None})
    try:
        return cls.model_validate(data)
    except ValidationError as e:
        raise InvalidSettingError(format_errors(e, what).replace("invalid configuration in", "invalid settings of")) \
            from None


def engine_overrides(overrides: dict[str, Any]) -> dict[str, Any]:
    """A copy of a constructor's keyword overrides with the old ``backend=`` given as
    ``engine`` (:func:`~facerec.runtime.engines.engine_alias`); every model family calls it.

    Raises:
        ConfigError: both ``engine`` and ``backend`` were given.
    """
    out = dict(overrides)
    engine = engine_alias(out.pop("engine", None), out.pop(ENGINE_ALIAS, None))
    if engine is not None:
        out["engine"] = engine
    return out
