"""The code location: everything under ``defs/``, found by Dagster's defs-folder loader (``dg`` projects).

``dagster dev``, ``dagster asset materialize -m instrec_pipeline.definitions``, ``dg dev``, ``dg launch``
and ``dg check defs`` all load this ``defs``. In Python, ``defs()`` returns the ``Definitions``.
"""

from pathlib import Path

import dagster as dg


@dg.definitions
def defs() -> dg.Definitions:
    return dg.load_from_defs_folder(path_within_project=Path(__file__).parent)
