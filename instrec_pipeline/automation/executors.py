"""The run executor, picked from the environment: a deployment switches engines without code changes.

``INSTREC_EXECUTOR``:

- ``in_process`` (default): one process per run. A step's start-up (torch, the code location) costs more
  than the small steps themselves, so on one machine this is the fastest.
- ``multiprocess``: one process per step on the machine that launched the run.
- ``celery``: each step is a task on a Celery broker, run by long-lived ``dagster-celery`` workers on other
  machines (``INSTREC_CELERY_BROKER`` / ``INSTREC_CELERY_BACKEND``, default ``redis://localhost:6379/0``).
  The instance storage and the store root must be shared by every worker (see README, Scale-out).
  GPU stages go to the Celery queue ``gpu`` (``GPU_STEP_TAGS``), so that only workers on GPU machines,
  started with ``-q gpu``, take them; every other step goes to Dagster's default queue, ``dagster``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from dagster import ExecutorDefinition, in_process_executor, multiprocess_executor

EXECUTOR_ENV = "INSTREC_EXECUTOR"
BROKER_ENV = "INSTREC_CELERY_BROKER"
BACKEND_ENV = "INSTREC_CELERY_BACKEND"
DEFAULT_REDIS = "redis://localhost:6379/0"
EXECUTORS = ("in_process", "multiprocess", "celery")
GPU_QUEUE = "gpu"
#: Op tags of the GPU stages (beside ``pool="gpu"``): the Celery executor routes them to ``GPU_QUEUE``;
#: the other executors ignore them. The key is dagster_celery's, spelt out to keep that import optional.
GPU_STEP_TAGS = {"dagster-celery/queue": GPU_QUEUE}


def celery_executor_from_env(env: Mapping[str, str]) -> ExecutorDefinition:
    """Dagster's Celery executor on the configured broker. Imported only here: it is an optional extra."""
    try:
        from dagster_celery import celery_executor
    except ImportError as e:
        raise RuntimeError(f"{EXECUTOR_ENV}=celery needs dagster-celery: pip install -e '.[celery]'") from e
    broker = env.get(BROKER_ENV) or DEFAULT_REDIS
    backend = env.get(BACKEND_ENV) or broker
    return celery_executor.configured({"broker": broker, "backend": backend}, name="celery")


def executor_from_env(env: Mapping[str, str] | None = None) -> ExecutorDefinition:
    """The executor named by ``INSTREC_EXECUTOR`` (default ``in_process``); an unknown name fails loudly."""
    env = os.environ if env is None else env
    name = (env.get(EXECUTOR_ENV) or "in_process").strip().lower().replace("-", "_")
    if name == "in_process":
        return in_process_executor
    if name == "multiprocess":
        return multiprocess_executor
    if name == "celery":
        return celery_executor_from_env(env)
    raise ValueError(f"{EXECUTOR_ENV}={env.get(EXECUTOR_ENV)!r} is not one of: {', '.join(EXECUTORS)}")
