"""The datasets the pipeline knows: the embedded demo, the paper's two lists, and user manifests.

User datasets are declared in a YAML file (``$INSTREC_DATASETS``, default ``instrec_datasets.yaml`` in
the working directory) so adding one needs no code change::

    datasets:
      mydata:
        manifest: /data/mydata/manifest.csv     # or .parquet; video_id, source, label[, split][, group]
        media_root: /data/mydata/media          # local sources are relative to it
        classes: [cello, flute, piano]          # optional: default = the labels found, sorted
        multilabel: true                        # optional: default = a manifest label holds "a;b"
        training:                               # optional: per-model training defaults
          audio: {max_epochs: 30}
          fusion: {inputs: oof, folds: 5}       #   leak-free fusion inputs (oof | holdout | insample)
        seeds: 3                                # optional: train each model with 3 seeds, mean ± sd
        split_seed: 0                           # optional: seed of the train/val/test assignment
        allow_hosts: [mirror.intranet]          # optional: internal hosts/networks its URLs may reach
        allow_networks: [10.1.0.0/16]
        allow_absolute_paths: false             # optional: local sources outside media_root

A bad entry (unknown key, missing field, wrong type, bad name) is left out with one message naming the
file, the dataset and the field; the other datasets still load.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from instrec_pipeline.datasets.demo import DEMO_CLASSES, generate_demo
from instrec_pipeline.datasets.labels import is_multilabel, split_labels
from instrec_pipeline.datasets.manifest import ManifestError, Rejected, assign_splits, read_table, validate
from instrec_pipeline.settings import DatasetSettings

log = logging.getLogger(__name__)

FCVID_CLASSES = (
    "accordion", "cello", "chamberMusic", "flute", "guitar", "harmonica", "piano", "rockBand",
    "saxophone", "symphonyOrchestra", "trumpet", "violin",
)  # fmt: skip
#: Class ids 0–12 of the YouTube-8M list, in that order.
YT8M_CLASSES = (
    "Guitar", "Piano", "Drums", "Violin", "Accordion", "Saxophone", "Flute", "Organ", "Cello", "Trumpet",
    "Clarinet", "Harmonica", "Banjo",
)  # fmt: skip


#: The demo trains in minutes on a laptop CPU: fewer epochs, smaller fusion inputs (the video lr is
#: chosen on val, as everywhere).
DEMO_TRAINING = {
    "audio": {"max_epochs": 8, "patience": 3},
    "video": {"max_epochs": 40, "patience": 8, "k": 10},
    "fusion": {"k": 10, "n": 128, "batch_size": 8, "dropout": 0.5, "max_epochs": 30, "patience": 8},
}


#: The paper's best setups per dataset, so their reports compare like with like: k frames per video (50 on
#: FCVID, 20 on YT-8M) and the fusion's audio net (Xception on FCVID, Choi on YT-8M: its best rows).
PAPER_TRAINING = {
    "fcvid": {"video": {"k": 50}, "fusion": {"k": 50, "audio_model": "xception"}},
    "yt8m": {"video": {"k": 20}, "fusion": {"k": 20, "audio_model": "choi_icmr"}},
}


@dataclass(frozen=True)
class Manifest:
    """A validated manifest of all splits, with the rows left out and where local sources live."""

    table: pd.DataFrame
    rejected: list[Rejected]
    classes: tuple[str, ...]


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    classes: tuple[str, ...]
    #: Builds the raw table (video_id, source, label[, split][, group]) given the store's dataset folder.
    read: Callable[[Path], pd.DataFrame]
    #: Where relative local sources live; None = the store's dataset folder (where the demo is generated).
    media_root: Path | None = None
    #: Training defaults per model kind (audio, video, fusion), over the paper's; e.g. the demo's short runs.
    training: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    #: The paper's dataset whose numbers the report shows beside ours (fcvid, yt8m), if any.
    paper_reference: str | None = None
    #: Several labels per video: sigmoid outputs, BCE, per-class thresholds tuned on val.
    multilabel: bool = False
    #: Known video durations (``video_id → seconds``), to size a partition's disk before extracting it.
    durations: Callable[[], pd.Series] | None = None
    #: Inception v3 weights when the launchpad leaves ``auto``: the paper's datasets insist on ImageNet
    #: (random features would make their video and fusion rows meaningless next to the paper's).
    inception_weights: str = "auto"
    #: Seed of the train/val/test assignment: part of the dataset, never of a run's config, so every
    #: partition and sensor computes the same split.
    split_seed: int = 0
    #: Seed replicates of every model (seeds ``seed … seed + N − 1``): the report gives mean ± sd over them.
    seeds: int = 1
    #: What its sources may reach (see :class:`DatasetEntry`).
    allow_absolute_paths: bool = False
    allow_hosts: tuple[str, ...] = ()
    allow_networks: tuple[str, ...] = ()

    def media_dir(self, dataset_dir: Path) -> Path:
        return self.media_root or dataset_dir


def _list_path(name: str) -> Path:
    return Path(str(resources.files("instrec_pipeline.datasets") / "lists" / name))


def _read_fcvid(_: Path) -> pd.DataFrame:
    """FCVID list: ``./<classFolder>/<youtube id>``; the class comes from the folder, never the id column.

    The numeric column disagrees with the 2017 code's own class-name list (one of its bugs).
    """
    raw = pd.read_csv(_list_path("fcvid_dataset.csv"), header=None, names=["path", "class_id"], dtype=str)
    parts = raw["path"].str.split("/", expand=True)
    folder, vid = parts[1], parts[2]
    label = folder.str.replace("Performance", "", regex=False)
    return pd.DataFrame({"video_id": vid, "source": "yt:" + vid, "label": label})


def _read_yt8m(_: Path) -> pd.DataFrame:
    raw = pd.read_csv(_list_path("yt8m_dataset.csv"), header=None, names=["video_id", "class_id"], dtype=str)
    label = raw["class_id"].astype(int).map(dict(enumerate(YT8M_CLASSES)))
    return pd.DataFrame({"video_id": raw["video_id"], "source": "yt:" + raw["video_id"], "label": label})


def _list_durations(name: str) -> pd.Series:
    """``video_id → seconds`` from a durations list (FCVID's ids carry their class folder)."""
    table = pd.read_csv(_list_path(name), dtype={"id": str})
    ids = table["id"].str.rsplit("/", n=1).str[-1]
    return pd.Series(table["duration_s"].to_numpy(float), index=ids).groupby(level=0).first()


def _read_demo(dataset_dir: Path) -> pd.DataFrame:
    """Generates the demo on first use (deterministic, cheap when already there)."""
    return read_table(generate_demo(dataset_dir))


#: A dataset's name is a partition key, a folder name and a table path: nothing that could escape them.
NAME = re.compile(r"^[A-Za-z0-9_-]+$")


class DatasetEntry(BaseModel):
    """One dataset of the datasets file; unknown keys are errors, not silently ignored."""

    model_config = ConfigDict(extra="forbid")

    manifest: Path
    media_root: Path | None = None
    classes: list[str] | None = None
    multilabel: bool | None = None
    training: dict[str, dict[str, Any]] = Field(default_factory=dict)
    paper_reference: Literal["fcvid", "yt8m"] | None = None
    inception_weights: str = "auto"
    split_seed: int = 0
    #: Train every model this many times with consecutive seeds; the report shows mean ± sd.
    seeds: int = Field(1, ge=1, le=20)
    #: Local sources may name files outside ``media_root`` (absolute paths, symlinks out of it).
    allow_absolute_paths: bool = False
    #: Hosts and networks (CIDR) that http(s) sources may reach although they are internal addresses.
    allow_hosts: list[str] = Field(default_factory=list)
    allow_networks: list[str] = Field(default_factory=list)


def _spec(name: str, entry: DatasetEntry, base: Path) -> DatasetSpec:
    manifest = (base / entry.manifest).resolve()
    classes, multilabel = entry.classes, entry.multilabel
    if not classes or (multilabel is None and manifest.exists()):
        fields = read_table(manifest)["label"].dropna()
        classes = classes or sorted({c for f in fields for c in split_labels(f)})
        multilabel = is_multilabel(fields) if multilabel is None else multilabel
    return DatasetSpec(
        name,
        tuple(classes),
        lambda _, m=manifest: read_table(m),
        (base / entry.media_root).resolve() if entry.media_root else manifest.parent,
        entry.training,
        entry.paper_reference,
        bool(multilabel),
        inception_weights=entry.inception_weights,
        split_seed=entry.split_seed,
        seeds=entry.seeds,
        allow_absolute_paths=entry.allow_absolute_paths,
        allow_hosts=tuple(entry.allow_hosts),
        allow_networks=tuple(entry.allow_networks),
    )


def _user_specs(path: Path, reserved: set[str]) -> tuple[dict[str, DatasetSpec], list[str]]:
    """The datasets declared in ``path`` and one message per bad entry (file, dataset, field, why).

    A bad entry is left out with its message; the others still load, and so does the code location.
    """
    if not path.exists():
        return {}, []
    try:
        config = yaml.safe_load(path.read_text()) or {}
        entries = config.get("datasets") or {}
        if not isinstance(entries, dict):
            raise ValueError("'datasets' must map names to entries")
    except (yaml.YAMLError, ValueError, AttributeError, OSError) as exc:
        return {}, [f"{path}: unreadable: {exc}"]
    specs, problems = {}, []
    for name, raw in entries.items():
        where = f"{path}: dataset {name!r}"
        if not NAME.match(str(name)) or name in reserved:
            why = "a built-in dataset's name" if name in reserved else "use letters, digits, '_' and '-' only"
            problems.append(f"{where}: bad name ({why})")
            continue
        try:
            specs[name] = _spec(name, DatasetEntry.model_validate(raw or {}), path.parent)
        except ValidationError as exc:
            problems += [f"{where}: field {'.'.join(map(str, e['loc'])) or '(entry)'}: {e['msg']}"
                         for e in exc.errors()]  # fmt: skip
        except (ManifestError, OSError, KeyError) as exc:
            problems.append(f"{where}: {exc}")
    return specs, problems


def config_problems() -> list[str]:
    """What was wrong with the datasets file at the last load (shown in logs and by ``instrec datasets``)."""
    datasets()
    return list(_PROBLEMS)


_PROBLEMS: list[str] = []


@cache
def datasets() -> dict[str, DatasetSpec]:
    """All known datasets, by partition name (the built-ins first)."""
    builtin = {
        "demo": DatasetSpec(
            "demo", DEMO_CLASSES, _read_demo, training=DEMO_TRAINING, paper_reference="fcvid"
        ),
        "fcvid": DatasetSpec(
            "fcvid", FCVID_CLASSES, _read_fcvid, paper_reference="fcvid", inception_weights="imagenet",
            durations=lambda: _list_durations("fcvid_durations.csv"), training=PAPER_TRAINING["fcvid"],
        ),  # fmt: skip
        "yt8m": DatasetSpec(
            "yt8m", YT8M_CLASSES, _read_yt8m, paper_reference="yt8m", inception_weights="imagenet",
            durations=lambda: _list_durations("yt8m_durations.csv"), training=PAPER_TRAINING["yt8m"],
        ),  # fmt: skip
    }
    config = DatasetSettings.read().datasets_file
    user, problems = _user_specs(config, set(builtin))
    _PROBLEMS[:] = problems
    for problem in problems:
        log.error("datasets file: %s (left out; the other datasets load)", problem)
    return {**builtin, **user}


def load_manifest(name: str, dataset_dir: Path) -> Manifest:
    """Read, validate and split one dataset's manifest (all splits, with the dataset's own split seed)."""
    spec = datasets()[name]
    table, rejected = validate(spec.read(dataset_dir), list(spec.classes), multilabel=spec.multilabel)
    table = assign_splits(table, seed=spec.split_seed, multilabel=spec.multilabel)
    return Manifest(table, rejected, spec.classes)
