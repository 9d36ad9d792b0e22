"""The one Definitions object: assets, resources and (later) automation. Thin by design."""

from __future__ import annotations

from dagster import Definitions, load_assets_from_modules

from instrec_pipeline.assets import features, models, reports, videos
from instrec_pipeline.resources import ComputeResource, ExtractionResource, MediaResource, StoreResource

defs = Definitions(
    assets=load_assets_from_modules([videos, features, models, reports]),
    resources={
        "store": StoreResource(),
        "compute": ComputeResource(),
        "media": MediaResource(),
        "extraction": ExtractionResource(),
    },
)
