"""`dagster dev` on loopback and its GraphQL API: what the web-UI tests and the backfill benchmark share."""

from __future__ import annotations

import json
import os
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from instrec_pipeline_tests.procs import free_port, start, stop, wait_for

LAUNCH = """mutation($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}"""
POLL = """query($id: String!) {
  partitionBackfillOrError(backfillId: $id) {
    __typename
    ... on PartitionBackfill { status numPartitions }
    ... on PythonError { message }
  }
}"""


def graphql(url: str, query: str, variables: dict) -> dict:
    body = json.dumps({"query": query, "variables": variables}).encode()
    request = urllib.request.Request(f"{url}/graphql", body, {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        payload = json.load(response)
    assert "errors" not in payload, payload
    return payload["data"]


@contextmanager
def dagster_dev(dagster_home: Path, store_root: Path) -> Iterator[str]:
    """`dagster dev` (webserver + daemon) in its own process group, always stopped; yields its URL."""
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "INSTREC_HOME": str(store_root)}
    dagster = Path(sys.executable).with_name("dagster")
    log = dagster_home / "dagster_dev.log"
    proc = start([str(dagster), "dev", "-h", "127.0.0.1", "-p", str(port), "-w", "workspace.yaml"], log, env)
    url = f"http://127.0.0.1:{port}"

    def answers() -> bool:
        try:
            urllib.request.urlopen(f"{url}/server_info", timeout=2).read()
            return True
        except OSError:
            return False

    try:
        wait_for(answers, proc, log, "dagster dev", timeout=120)
        yield url
    finally:
        stop(proc)


def backfill(url: str, assets: list[str], partitions: list[str], timeout: float) -> tuple[str, str, float]:
    """Launch a partition backfill as the UI does, poll it to its end: ``(id, final status, seconds)``."""
    params = {"assetSelection": [{"path": [a]} for a in assets], "partitionNames": partitions}
    began = time.time()
    launched = graphql(url, LAUNCH, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    status = "REQUESTED"
    while status == "REQUESTED" and time.time() - began < timeout:
        time.sleep(3)
        status = graphql(url, POLL, {"id": launched["backfillId"]})["partitionBackfillOrError"]["status"]
    return launched["backfillId"], status, time.time() - began
