"""Everything that touches Dagster: assets, checks, jobs, automation, resources, partitions, the executor.

``instrec_pipeline.definitions`` loads this folder with ``load_from_defs_folder``: module-level assets,
checks, jobs and sensors are found as they are; what depends on settings read at load (resources, the
executor, the automation's source asset and sensors) comes from ``@definitions`` functions. The stage
packages (datasets, media, features, models, training, evaluation, store) stay Dagster-free and never
import from here.
"""
