"""Everything that touches Dagster: assets, checks, jobs, automation, resources, partitions, the executor.

``instrec_pipeline.definitions`` loads this folder with ``load_from_defs_folder``: module-level assets,
checks, jobs, schedules and sensors are found as they are; resources and the executor come from the
``@definitions`` functions in ``resources.py`` and ``executors.py``. The stage packages (datasets, media,
features, models, training, evaluation, store) stay Dagster-free and never import from here.
"""
