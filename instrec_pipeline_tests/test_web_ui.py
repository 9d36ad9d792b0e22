"""The web UI for real: `dagster dev` on loopback over the session's instance; a partition backfill through
GraphQL; headless Chromium looking at the asset graph and the report as a person would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from instrec_pipeline.cli import TRAINING
from instrec_pipeline.defs.jobs import EXTRACTION_ASSETS
from instrec_pipeline.store.layout import Layout
from instrec_pipeline_tests.dagster_ui import backfill, graphql
from instrec_pipeline_tests.dagster_ui import dagster_dev as run_dagster_dev

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = Path(os.environ.get("INSTREC_SCREENSHOTS", REPO / "bench" / "out" / "screenshots"))


@pytest.fixture(scope="module")
def dagster_dev(materialised: tuple[Layout, object], dagster_home: Path) -> Iterator[str]:
    """`dagster dev` on loopback over the session's instance and store."""
    with run_dagster_dev(dagster_home, materialised[0].root) as url:
        yield url


def test_partition_backfill_through_graphql(dagster_dev: str, materialised: tuple[Layout, object]) -> None:
    from dagster import AssetKey

    _, instance = materialised
    partitions = ["tiny|train", "tiny|val", "tiny|test"]
    backfill_id, status, seconds = backfill(dagster_dev, EXTRACTION_ASSETS, partitions, timeout=420)
    print(f"backfill of {len(partitions)} partitions × {len(EXTRACTION_ASSETS)} assets: {seconds:.0f} s")
    assert status == "COMPLETED_SUCCESS"
    runs = instance.get_runs()
    backfill_runs = [r for r in runs if r.tags.get("dagster/backfill") == backfill_id]
    assert backfill_runs and all(r.is_success for r in backfill_runs)
    for run in backfill_runs:  # scripts and backfills carry the per-dimension partition tags
        assert run.tags["dagster/partition/dataset"] == "tiny" and "dagster/partition/split" in run.tags
    for asset in EXTRACTION_ASSETS:
        events = instance.fetch_materializations(AssetKey(asset), limit=200).records
        in_backfill = {e.partition_key for e in events if e.run_id in {r.run_id for r in backfill_runs}}
        assert in_backfill == set(partitions), asset


def _browser():  # noqa: ANN202
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if not chromium or not driver:
        pytest.skip("no chromium/chromedriver installed (apt-get install chromium chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--window-size=1600,1100",
    ):
        options.add_argument(flag)  # fmt: skip
    return webdriver.Chrome(service=Service(driver), options=options)


def _dismiss_community_dialog(browser) -> None:  # noqa: ANN001
    from selenium.webdriver.common.by import By

    for button in browser.find_elements(By.XPATH, "//button[normalize-space()='Skip']"):
        button.click()
        time.sleep(0.5)


def _wait_for(browser, text: str, timeout: float = 60) -> None:  # noqa: ANN001
    deadline = time.time() + timeout
    while time.time() < deadline:
        _dismiss_community_dialog(browser)
        if text in browser.page_source:
            return
        time.sleep(1)
    raise AssertionError(f"{text!r} never appeared on {browser.current_url}")


ALL_ASSETS = (*EXTRACTION_ASSETS, *TRAINING)


def look_at_the_ui(url: str, dataset: str, out: Path) -> list[Path]:
    """What a person checks: every asset, the graph per group, the partitions, the report with its images."""
    from selenium.webdriver.common.by import By

    browser = _browser()
    out.mkdir(parents=True, exist_ok=True)
    shots = []

    def shot(name: str) -> None:
        shots.append(out / f"{name}.png")
        browser.save_screenshot(str(shots[-1]))

    try:
        browser.get(f"{url}/assets")
        for asset in ALL_ASSETS:
            _wait_for(browser, asset)
        shot("catalog")
        for group in ("videos", "features", "models", "reports"):
            browser.get(f"{url}/locations/instrec_pipeline/asset-groups/{group}")
            _wait_for(browser, "Materialize")
            time.sleep(2)
            shot(f"graph_{group}")
        browser.get(f"{url}/assets/demux?view=partitions")
        for text in (dataset, "train", "val", "test", "Materialized ("):
            _wait_for(browser, text)
        shot("demux_partitions")
        browser.get(f"{url}/assets/evaluation_report?partition={dataset}")
        _wait_for(browser, "[Show Markdown]")
        browser.find_elements(By.XPATH, "//*[normalize-space()='[Show Markdown]']")[-1].click()  # the link
        _wait_for(browser, "Hit@1")
        deadline = time.time() + 30
        images: list = []
        while time.time() < deadline and not images:
            images = browser.find_elements(By.XPATH, "//img[starts-with(@src, 'data:image/png;base64,')]")
            time.sleep(1)
        assert images, "the report's images are not shown"
        assert all(
            browser.execute_script("return arguments[0].naturalWidth", img) > 100 for img in images[:3]
        )
        summary = browser.find_element(By.XPATH, "//h2[normalize-space()='Summary']")
        browser.execute_script("arguments[0].scrollIntoView()", summary)
        time.sleep(1)
        shot("evaluation_report")
        browser.execute_script("arguments[0].scrollIntoView()", images[0])
        time.sleep(1)
        shot("evaluation_report_images")
    finally:
        browser.quit()
    return shots


def test_web_ui_shows_graph_partitions_and_report(dagster_dev: str) -> None:
    shots = look_at_the_ui(dagster_dev, "tiny", SCREENSHOTS)
    assert all(p.stat().st_size > 10_000 for p in shots)
    print(f"screenshots: {', '.join(str(p) for p in shots)}")


def test_partition_backfill_from_the_cli(dagster_dev: str, materialised: tuple[Layout, object],
                                         dagster_home: Path) -> None:  # fmt: skip
    """`dagster job backfill` queues one run per partition; the daemon of `dagster dev` runs them."""
    layout, instance = materialised
    env = {**os.environ, "DAGSTER_HOME": str(dagster_home), "INSTREC_HOME": str(layout.root)}
    before = {r.run_id for r in instance.get_runs()}
    dagster = Path(sys.executable).with_name("dagster")
    subprocess.run(
        [str(dagster), "job", "backfill", "-w", "workspace.yaml", "-j", "extraction_job",
         "--partitions", "tiny|val,tiny|test", "--noprompt"],
        cwd=REPO, env=env, check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    deadline = time.time() + 300
    while time.time() < deadline:
        runs = [r for r in instance.get_runs() if r.run_id not in before]
        if len(runs) == 2 and all(r.is_finished for r in runs):
            break
        time.sleep(3)
    assert len(runs) == 2 and all(r.is_success for r in runs), [(r.run_id, r.status) for r in runs]
    assert {r.tags["dagster/partition"] for r in runs} == {"tiny|val", "tiny|test"}
    assert all(r.tags["dagster/partition/dataset"] == "tiny" for r in runs)


STALE = """query($keys: [AssetKeyInput!], $partition: String) {
  assetNodes(assetKeys: $keys) { assetKey { path } staleStatus(partition: $partition) }
}"""


def _stale(url: str, assets: list[str], partition: str) -> dict[str, str]:
    data = graphql(url, STALE, {"keys": [{"path": [a]} for a in assets], "partition": partition})
    return {n["assetKey"]["path"][0]: n["staleStatus"] for n in data["assetNodes"]}


def test_a_changed_parameter_marks_exactly_the_affected_assets_stale(
    dagster_dev: str, materialised: tuple[Layout, object]
) -> None:
    from dagster import materialize

    from instrec_pipeline.definitions import defs
    from instrec_pipeline.defs.resources import ExtractionResource, StoreResource

    layout, instance = materialised
    loaded = defs()
    extraction = ["manifest", "raw_videos", "demux", "log_mel", "frame_embeddings"]
    assert set(_stale(dagster_dev, extraction, "tiny|val").values()) == {"FRESH"}
    resources = {**loaded.resources, "store": StoreResource(root=str(layout.root)),
                 "extraction": ExtractionResource(crop=200)}  # fmt: skip
    result = materialize(list(loaded.assets), selection=["manifest", "raw_videos", "demux"],
                         partition_key="tiny|val", instance=instance, resources=resources)  # fmt: skip
    assert result.success
    assert result.asset_materializations_for_node("demux")[0].metadata["processed"].value == 6  # re-extracted
    val = _stale(dagster_dev, extraction, "tiny|val")
    assert val == {"manifest": "FRESH", "raw_videos": "FRESH", "demux": "FRESH", "log_mel": "STALE",
                   "frame_embeddings": "STALE"}, val  # fmt: skip
    assert set(_stale(dagster_dev, ["log_mel", "frame_embeddings"], "tiny|train").values()) == {"FRESH"}

    # Re-extracting the features passes the change on to the per-dataset models (across the dataset × split
    # → dataset mapping): the four models that read frame embeddings are stale, the rest not yet.
    models = ["audio_model_han", "audio_model_choi", "audio_model_xception", "video_model"]
    assert set(_stale(dagster_dev, models, "tiny").values()) == {"FRESH"}
    result = materialize(list(loaded.assets), selection=["log_mel", "frame_embeddings"],
                         partition_key="tiny|val", instance=instance, resources=resources)  # fmt: skip
    assert result.success
    assert set(_stale(dagster_dev, models, "tiny").values()) == {"STALE"}
    # Dagster marks the direct children of changed data: fusion and report follow once the models retrain.
    assert set(_stale(dagster_dev, ["fusion_model", "evaluation_report"], "tiny").values()) == {"FRESH"}
