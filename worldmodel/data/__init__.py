"""Datasets of the world model: generation with the twin, on-disk format, torch loading.

- ``format``: one ``.npz`` per map (``MapRecord``, ``save_map``, ``load_map``, validation).
- ``generate``: Para / Topo datasets from the twin (``python -m worldmodel.data.generate``).
- ``dataset``: ``load_split``, ``WindowDataset``, graph batches with cell masks
  (``collate_maps``), ``make_loader`` and ``dataset_summary``.

The torch-side names are imported lazily, so ``worldmodel.data.format`` and the generator do
not import torch.
"""

from __future__ import annotations

from typing import Any

from worldmodel.data.format import (
    FORMAT_VERSION,
    REQUIRED_META,
    DatasetFormatError,
    MapRecord,
    load_map,
    save_map,
    validate_map,
)

_DATASET_NAMES = (
    "BATCH_KEYS",
    "SizeBucketBatchSampler",
    "WindowDataset",
    "collate_maps",
    "dataset_summary",
    "load_split",
    "make_loader",
    "read_manifest",
)

__all__ = [
    "FORMAT_VERSION",
    "REQUIRED_META",
    "DatasetFormatError",
    "MapRecord",
    "load_map",
    "save_map",
    "validate_map",
    *_DATASET_NAMES,
]


def __getattr__(name: str) -> Any:
    if name in _DATASET_NAMES:
        from worldmodel.data import dataset

        return getattr(dataset, name)
    raise AttributeError(f"module 'worldmodel.data' has no attribute {name!r}")
