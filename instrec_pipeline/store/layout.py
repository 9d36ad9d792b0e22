"""Where everything lives under one store root, so every stage and the web UI agree on paths.

```
<root>/raw/<aa>/<sha256>.<ext>             content-addressed raw videos (shared by all datasets)
<root>/datasets/<dataset>/                 generated or user media (the demo lives here)
<root>/tables/<dataset>/<split>/*.csv      manifest and fetch tables per partition
<root>/features/<dataset>/<split>.zarr     one Zarr group per partition (see features/store.py)
<root>/models/<dataset>/<model>.pt         checkpoints
<root>/reports/<dataset>/                  report.md, summary.csv, images
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from instrec_pipeline.settings import StoreSettings
from instrec_pipeline.store.atomic import atomic_write
from instrec_pipeline.store.schema import FeatureStore


def default_root() -> Path:
    """``$INSTREC_HOME`` or ``./data``: a laptop default that a resource can override per deployment."""
    return StoreSettings.read().root


def write_csv_atomic(table: pd.DataFrame, path: Path) -> None:
    """Write next to the target and rename, so a reader never sees half a table."""
    atomic_write(path, lambda fh: table.to_csv(fh, index=False))


def read_csv(path: Path) -> pd.DataFrame:
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: materialise the upstream asset first")
    return pd.read_csv(
        path,
        dtype={"video_id": str, "source": str, "label": str, "split": str, "group": str},
        keep_default_na=False,
    )


@dataclass(frozen=True)
class Layout:
    root: Path

    @property
    def raw(self) -> Path:
        return self.root / "raw"

    def dataset_dir(self, dataset: str) -> Path:
        return self.root / "datasets" / dataset

    def table(self, dataset: str, split: str, name: str) -> Path:
        return self.root / "tables" / dataset / split / f"{name}.csv"

    def spool(self, dataset: str, split: str) -> Path:
        """Scratch space for a partition's demuxed videos on their way into the store (same disk, emptied
        per video; what a killed run left is removed by the next writer, under the partition lock)."""
        return self.root / "tmp" / dataset / split

    @property
    def features(self) -> FeatureStore:
        return FeatureStore(self.root)

    def model(self, dataset: str, name: str) -> Path:
        return self.root / "models" / dataset / f"{name}.pt"

    def report_dir(self, dataset: str) -> Path:
        return self.root / "reports" / dataset
