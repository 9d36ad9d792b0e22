"""Settings from the environment, read and validated when a step needs them, never at import.

A bad value (``INSTREC_MAX_FAILED_RATIO=abc``) then fails the step that uses it with a message naming the
variable, instead of taking the whole code location down.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from pydantic import BaseModel, Field, ValidationError


class Settings(BaseModel):
    #: INSTREC_MAX_FAILED_RATIO: the largest share of a partition's videos that may fail.
    max_failed_ratio: float = Field(0.2, ge=0, le=1)


_ENV = {"max_failed_ratio": "INSTREC_MAX_FAILED_RATIO"}


def settings(env: Mapping[str, str] | None = None) -> Settings:
    """The current settings; ``ValueError`` naming the variable and the rule when one is malformed."""
    env = os.environ if env is None else env
    given = {field: env[var] for field, var in _ENV.items() if env.get(var, "") != ""}
    try:
        return Settings(**given)
    except ValidationError as exc:
        problems = [f"{_ENV[str(e['loc'][0])]}={given[str(e['loc'][0])]!r}: {e['msg']}" for e in exc.errors()]
        raise ValueError("bad setting: " + "; ".join(problems)) from None
