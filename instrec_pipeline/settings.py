"""Every setting the pipeline takes from the environment, read here and only when a caller asks.

Nothing is read at import: a test or a deployment can change a variable before a step, and a bad value
(``INSTREC_MAX_FAILED_RATIO=abc``) fails only what uses it, with a message naming the variable, instead of
taking the whole code location down. Settings are grouped by their user (one small class each), so a bad
check threshold never stops the store or the executor from being configured. Dagster-free: the stage
packages read their settings here too.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

EXECUTORS = ("in_process", "multiprocess", "celery")
DEFAULT_REDIS = "redis://localhost:6379/0"


class EnvSettings(BaseModel):
    """Fields are declared with their variable as ``alias``; an empty variable counts as unset."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    @classmethod
    def read(cls, env: Mapping[str, str] | None = None) -> Self:
        """The current values (``env``: for tests); ``ValueError`` naming the variable of a bad value."""
        env = os.environ if env is None else env
        names = [f.alias for f in cls.model_fields.values() if f.alias]
        given = {name: env[name] for name in names if env.get(name, "") != ""}
        try:
            return cls.model_validate(given)
        except ValidationError as exc:
            names = [str(e["loc"][0]) if e["loc"] else cls.__name__ for e in exc.errors()]
            problems = [f"{n}={given.get(n)!r}: {e['msg']}" for n, e in zip(names, exc.errors(), strict=True)]
            raise ValueError("bad setting: " + "; ".join(problems)) from None


class StoreSettings(EnvSettings):
    #: INSTREC_HOME: the store root when the ``store`` resource names none.
    home: Path = Field(Path("data"), alias="INSTREC_HOME")

    @property
    def root(self) -> Path:
        return self.home.expanduser().resolve()


class DatasetSettings(EnvSettings):
    #: INSTREC_DATASETS: the user datasets file (relative to the working directory).
    datasets_file: Path = Field(Path("instrec_datasets.yaml"), alias="INSTREC_DATASETS")


class DemoSettings(EnvSettings):
    #: INSTREC_SOUNDFONT: a General MIDI soundfont used before the Debian defaults.
    soundfont: Path | None = Field(None, alias="INSTREC_SOUNDFONT")


class CheckSettings(EnvSettings):
    #: INSTREC_MAX_FAILED_RATIO: the largest share of a partition's videos that may fail.
    max_failed_ratio: float = Field(0.2, ge=0, le=1, alias="INSTREC_MAX_FAILED_RATIO")


class ExecutorSettings(EnvSettings):
    #: INSTREC_EXECUTOR: the run executor (see defs/executors.py).
    executor: Literal["in_process", "multiprocess", "celery"] = Field("in_process", alias="INSTREC_EXECUTOR")
    #: INSTREC_CELERY_BROKER / INSTREC_CELERY_BACKEND: the Celery broker, and its result backend (the
    #: broker when unset).
    celery_broker: str = Field(DEFAULT_REDIS, alias="INSTREC_CELERY_BROKER")
    celery_backend: str = Field("", alias="INSTREC_CELERY_BACKEND")

    @field_validator("executor", mode="before")
    @classmethod
    def _known(cls, value: object) -> str:
        name = str(value).strip().lower().replace("-", "_")
        if name not in EXECUTORS:
            raise ValueError(f"{value!r} is not one of: {', '.join(EXECUTORS)}")
        return name

    @property
    def backend(self) -> str:
        return self.celery_backend or self.celery_broker


class ReextractionSettings(EnvSettings):
    #: INSTREC_REEXTRACT_CRON: when scheduled re-extraction runs (default nightly at 03:00).
    cron: str = Field("0 3 * * *", alias="INSTREC_REEXTRACT_CRON")
    #: INSTREC_REEXTRACT_DATASETS: comma-separated datasets re-extracted on schedule; empty = the default
    #: (every dataset but the paper's two YouTube lists).
    datasets: tuple[str, ...] = Field((), alias="INSTREC_REEXTRACT_DATASETS")

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        if not (value.startswith("@") or len(value.split()) == 5):
            raise ValueError("a cron string has 5 fields (minute hour day month weekday), e.g. '0 3 * * *'")
        return value

    @field_validator("datasets", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        return tuple(d.strip() for d in value.split(",") if d.strip()) if isinstance(value, str) else value


class InstanceSettings(EnvSettings):
    #: DAGSTER_HOME: Dagster's own variable; the CLI uses the persistent instance there when it is set.
    dagster_home: str = Field("", alias="DAGSTER_HOME")
