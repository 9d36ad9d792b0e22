"""Runs whose process died (kill -9, out of memory) are marked failed and their pool slots freed.

Dagster's default run launcher cannot check a run worker's health, so a run killed mid-step stayed
STARTED forever and kept its ``gpu`` pool slot: every later GPU step waited "blocked by limit for pool
gpu". The sensor here finds such runs — the process that started them is gone from this host and the run
has logged nothing for ``grace_s`` (long steps log progress every 30 s; the grace also spares runs that
another host started) — reports them failed and frees their slots.
"""

from __future__ import annotations

import os
import time

from dagster import (
    DagsterEventType,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

GRACE_S = 300.0


def _alive(pid: int, since: float) -> bool:
    """Whether ``pid`` runs here and was started before ``since`` (a recycled pid is a new process)."""
    try:
        started = os.stat(f"/proc/{pid}").st_mtime if os.path.exists("/proc") else None
        os.kill(pid, 0)
    except (ProcessLookupError, FileNotFoundError):
        return False
    except PermissionError:
        return True
    return started is None or started <= since + 5


def reap_dead_runs(instance: DagsterInstance, grace_s: float = GRACE_S) -> list[str]:
    """Mark failed the STARTED runs whose process is gone; returns their ids."""
    reaped = []
    for run in instance.get_runs(filters=RunsFilter(statuses=[DagsterRunStatus.STARTED])):
        starts = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.RUN_START, limit=1).records
        last = instance.get_records_for_run(run.run_id, ascending=False, limit=1).records
        if not starts or not last:
            continue
        start = starts[0].event_log_entry
        pid = start.dagster_event.pid if start.dagster_event else None
        if pid is None or _alive(pid, start.timestamp) or time.time() - last[0].timestamp < grace_s:
            continue
        instance.report_run_failed(run, f"the run's process (pid {pid}) is gone: killed or out of memory")
        instance.event_log_storage.free_concurrency_slots_for_run(run.run_id)
        reaped.append(run.run_id)
    return reaped


@sensor(
    minimum_interval_seconds=60,
    default_status=DefaultSensorStatus.RUNNING,
    description="Marks failed the runs whose process died and frees their pool slots (GPU included).",
)
def dead_run_sensor(context: SensorEvaluationContext) -> SkipReason:
    reaped = reap_dead_runs(context.instance)
    for run_id in reaped:
        context.log.warning(f"run {run_id}: its process is gone; marked failed, pool slots freed")
    return SkipReason(f"marked failed: {', '.join(reaped)}" if reaped else "every started run is alive")
