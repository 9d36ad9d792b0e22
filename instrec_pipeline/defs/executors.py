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

The executor is chosen when the code location loads (``executor_defs``), not at import.
"""

from __future__ import annotations

from collections.abc import Mapping

import dagster as dg

from instrec_pipeline.settings import ExecutorSettings

GPU_QUEUE = "gpu"
#: Op tags of the GPU stages (beside ``pool="gpu"``): the Celery executor routes them to ``GPU_QUEUE``;
#: the other executors ignore them. The key is dagster_celery's, spelt out to keep that import optional.
GPU_STEP_TAGS = {"dagster-celery/queue": GPU_QUEUE}


def celery_executor(settings: ExecutorSettings) -> dg.ExecutorDefinition:
    """Dagster's Celery executor on the configured broker. Imported only here: it is an optional extra."""
    try:
        from dagster_celery import celery_executor
    except ImportError as e:
        raise RuntimeError("INSTREC_EXECUTOR=celery needs dagster-celery: pip install -e '.[celery]'") from e
    config = {"broker": settings.celery_broker, "backend": settings.backend}
    return celery_executor.configured(config, name="celery")


def executor_from_env(env: Mapping[str, str] | None = None) -> dg.ExecutorDefinition:
    """The executor named by ``INSTREC_EXECUTOR`` (default ``in_process``); an unknown name fails loudly."""
    settings = ExecutorSettings.read(env)
    if settings.executor == "multiprocess":
        return dg.multiprocess_executor
    if settings.executor == "celery":
        return celery_executor(settings)
    return dg.in_process_executor


@dg.definitions
def executor_defs() -> dg.Definitions:
    """The default executor of every job; a module-level executor is not something the defs folder finds."""
    return dg.Definitions(executor=executor_from_env())
