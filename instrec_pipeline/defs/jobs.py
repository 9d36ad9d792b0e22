"""The extraction job: the five per dataset × split assets, the unit a backfill, schedule or sensor runs."""

import dagster as dg

EXTRACTION_ASSETS = ["manifest", "raw_videos", "demux", "log_mel", "frame_embeddings"]

extraction_job = dg.define_asset_job(
    "extraction_job",
    selection=dg.AssetSelection.assets(*EXTRACTION_ASSETS),
    description="manifest → raw_videos → demux → log_mel + frame_embeddings for one dataset × split.",
)
