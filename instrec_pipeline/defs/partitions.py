"""Partitions: extraction runs per dataset × split; training and reports per dataset (all splits)."""

from __future__ import annotations

from dagster import (
    MultiPartitionKey,
    MultiPartitionsDefinition,
    MultiToSingleDimensionPartitionMapping,
    StaticPartitionsDefinition,
)

from instrec_pipeline.datasets.manifest import SPLITS
from instrec_pipeline.datasets.registry import datasets

DATASETS = list(datasets())

dataset_partitions = StaticPartitionsDefinition(DATASETS)
dataset_split_partitions = MultiPartitionsDefinition(
    {"dataset": dataset_partitions, "split": StaticPartitionsDefinition(list(SPLITS))}
)
#: A per-dataset asset reads every split of its dataset.
all_splits_of_dataset = MultiToSingleDimensionPartitionMapping(partition_dimension_name="dataset")


def split_key(partition_key: str | MultiPartitionKey) -> tuple[str, str]:
    """``demo|train`` (or its MultiPartitionKey) → ``("demo", "train")``."""
    if isinstance(partition_key, MultiPartitionKey):
        keys = partition_key.keys_by_dimension
        return keys["dataset"], keys["split"]
    dataset, split = str(partition_key).split("|")
    return dataset, split
