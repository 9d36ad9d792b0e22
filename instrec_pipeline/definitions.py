"""The one Definitions object: assets, checks, the job, schedule, sensor and resources. Thin by design."""

from dagster import Definitions, load_assets_from_modules

from instrec_pipeline.assets import features, models, reports, videos
from instrec_pipeline.automation.checks import checks
from instrec_pipeline.automation.executors import executor_from_env
from instrec_pipeline.automation.runs import dead_run_sensor
from instrec_pipeline.automation.schedules import extraction_job, reextraction_schedule
from instrec_pipeline.automation.sensors import manifest_change_sensor
from instrec_pipeline.resources import ComputeResource, ExtractionResource, MediaResource, StoreResource

defs = Definitions(
    assets=load_assets_from_modules([videos, features, models, reports]),
    asset_checks=checks,
    jobs=[extraction_job],
    schedules=[reextraction_schedule],
    sensors=[manifest_change_sensor, dead_run_sensor],
    # One process per run by default: a step's start-up (torch, the code location) costs more than the
    # small steps themselves; cluster deployments set INSTREC_EXECUTOR=celery (see README, Scale-out).
    executor=executor_from_env(),
    resources={
        "store": StoreResource(),
        "compute": ComputeResource(),
        "media": MediaResource(),
        "extraction": ExtractionResource(),
    },
)
