"""Windows, graph batches with cell masks, split loading and loaders."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from worldmodel.data.dataset import (
    BATCH_KEYS,
    SizeBucketBatchSampler,
    WindowDataset,
    collate_maps,
    dataset_summary,
    load_split,
    make_loader,
)
from worldmodel.data.format import DatasetFormatError


@pytest.mark.parametrize(
    ("n_slots", "h", "p", "k", "stride", "expect"),
    [
        (20, 4, 2, 1, None, 8),  # (20 - 6) // 2 + 1
        (20, 4, 2, 3, None, 6),  # T_w = 10: (20 - 10) // 2 + 1
        (20, 4, 2, 1, 1, 15),
        (20, 4, 2, 1, 5, 3),  # starts 0, 5, 10 (14 + 6 > 20)
        (6, 4, 2, 1, None, 1),
        (5, 4, 2, 1, None, 0),
    ],
)
def test_window_count(make_record, n_slots, h, p, k, stride, expect) -> None:
    ds = WindowDataset([make_record(3, n_slots)], h, p, n_chunks=k, stride=stride)
    assert ds.window == h + k * p
    assert len(ds) == expect == ds.windows_per_map(n_slots)


def test_window_count_over_maps(make_record) -> None:
    recs = [make_record(3, 20), make_record(4, 13, seed=1), make_record(5, 3, seed=2)]
    ds = WindowDataset(recs, history=4, horizon=3, stride=2)
    counts = [max(0, (r.n_slots - 7) // 2 + 1) for r in recs]
    assert len(ds) == sum(counts) == 7 + 4
    pairs = [ds.index(i) for i in range(len(ds))]
    assert pairs == [(0, s) for s in range(0, 14, 2)] + [(1, s) for s in range(0, 7, 2)]
    assert ds.index(-1) == (1, 6)
    with pytest.raises(IndexError):
        ds[len(ds)]
    np.testing.assert_array_equal(ds.cells_per_item, [3] * 7 + [4] * 4)


def test_bad_window_arguments(make_record) -> None:
    for kwargs in ({"history": 0}, {"horizon": 0}, {"n_chunks": 0}, {"stride": 0}):
        args = {"history": 2, "horizon": 2, **kwargs}
        with pytest.raises(ValueError, match=next(iter(kwargs))):
            WindowDataset([make_record()], **args)


def test_item_contents_are_the_right_slices(make_record) -> None:
    recs = [make_record(4, 20), make_record(6, 24, seed=1, extent_m=2000.0)]
    ds = WindowDataset(recs, history=3, horizon=2, n_chunks=2, stride=3)
    i = next(j for j in range(len(ds)) if ds.index(j) == (1, 9))
    item = ds[i]
    rec, sl = recs[1], slice(9, 9 + 7)
    assert item["traffic"].shape == (7, 6) and item["actions"].shape == (7, 6, 4)
    for key in ("traffic", "actions", "active", "slot_of_day", "day_of_week", "od"):
        np.testing.assert_array_equal(item[key].numpy(), getattr(rec, key)[sl], err_msg=key)
        assert item[key].dtype == torch.from_numpy(getattr(rec, key)).dtype, key
    for key in ("cell_xy", "poi", "facility"):
        np.testing.assert_array_equal(item[key].numpy(), getattr(rec, key), err_msg=key)
    assert item["active"].dtype == torch.bool
    assert item["slot_of_day"].dtype == torch.int64 and item["day_of_week"].dtype == torch.int64
    assert item["extent_m"].dtype == torch.float32 and item["extent_m"].shape == ()
    assert float(item["extent_m"]) == 2000.0
    assert int(item["map_index"]) == 1 and int(item["start"]) == 9
    assert item["map_index"].dtype == torch.int64 and item["start"].dtype == torch.int64


def test_tensors_are_shared_not_copied(make_record) -> None:
    ds = WindowDataset([make_record(4, 20)], history=2, horizon=2)
    a, b = ds[0], ds[1]
    assert a["poi"].data_ptr() == b["poi"].data_ptr()
    assert a["cell_xy"].data_ptr() == b["cell_xy"].data_ptr()
    assert a["traffic"].untyped_storage().data_ptr() == b["traffic"].untyped_storage().data_ptr()


def test_multi_chunk_window_length(make_record) -> None:
    ds = WindowDataset([make_record(3, 40)], history=4, horizon=3, n_chunks=4)
    assert ds.window == 4 + 4 * 3
    item = ds[0]
    for key in ("traffic", "actions", "active", "slot_of_day", "day_of_week", "od"):
        assert item[key].shape[0] == 16, key
    batch = next(iter(make_loader(ds.records, 4, 3, n_chunks=4, batch_size=2)))
    assert batch["traffic"].shape == (2, 16, 3)


def test_collate_pads_and_masks(make_record) -> None:
    r5, r8 = make_record(5, 20), make_record(8, 20, seed=1)
    ds = WindowDataset([r5, r8], history=4, horizon=2)
    i8 = next(j for j in range(len(ds)) if ds.index(j) == (1, 2))
    batch = collate_maps([ds[0], ds[i8]])
    assert tuple(batch) == BATCH_KEYS
    assert batch["traffic"].shape == (2, 6, 8)
    assert batch["actions"].shape == (2, 6, 8, 4)
    assert batch["active"].shape == (2, 6, 8) and batch["active"].dtype == torch.bool
    assert batch["cell_xy"].shape == (2, 8, 2)
    assert batch["extent_m"].shape == (2,) and batch["map_index"].tolist() == [0, 1]
    assert batch["start"].tolist() == [0, 2]
    assert batch["slot_of_day"].shape == (2, 6) and batch["od"].shape == (2, 6, 2, 4, 4)
    assert batch["poi"].shape == (2, 4, 4, 3) and batch["facility"].shape == (2, 2, 8, 8)
    mask = batch["cell_mask"]
    assert mask.dtype == torch.bool
    assert mask.tolist() == [[True] * 5 + [False] * 3, [True] * 8]
    # real cells carry the data, padded cells are zero and inactive
    np.testing.assert_array_equal(batch["traffic"][0, :, :5].numpy(), r5.traffic[0:6])
    np.testing.assert_array_equal(batch["actions"][0, :, :5].numpy(), r5.actions[0:6])
    np.testing.assert_array_equal(batch["active"][0, :, :5].numpy(), r5.active[0:6])
    np.testing.assert_array_equal(batch["cell_xy"][0, :5].numpy(), r5.cell_xy)
    np.testing.assert_array_equal(batch["traffic"][1].numpy(), r8.traffic[2:8])
    for key in ("traffic", "actions", "active"):
        assert not batch[key][0, :, 5:].any(), key
    assert not batch["cell_xy"][0, 5:].any()
    # inactive real cells stay inactive; padding never becomes active
    assert not (batch["active"] & ~mask[:, None, :]).any()


def test_collate_rejects_mismatched_context(make_record) -> None:
    a = WindowDataset([make_record(3, 10, grid=4)], 2, 2)[0]
    b = WindowDataset([make_record(3, 10, grid=5)], 2, 2)[0]
    with pytest.raises(ValueError, match="context grid"):
        collate_maps([a, b])
    c = WindowDataset([make_record(3, 10, fac_px=16)], 2, 2)[0]
    with pytest.raises(ValueError, match="facility"):
        collate_maps([a, c])
    d = WindowDataset([make_record(3, 10)], 2, 3)[0]
    with pytest.raises(ValueError, match="window length"):
        collate_maps([a, d])
    with pytest.raises(ValueError, match="empty"):
        collate_maps([])


def _three_scenarios(make_record) -> list:
    specs = [
        ("urban-para", "train", 5),
        ("urban-para", "train", 5),
        ("urban-para", "val", 5),
        ("suburb-topo", "train", 8),
        ("suburb-topo", "test", 8),
    ]
    return [
        make_record(n, 20, seed=i, name=f"{sc}-{sp}-{i:03d}", scenario=sc, split=sp)
        for i, (sc, sp, n) in enumerate(specs)
    ]


def test_load_split_filters(tmp_path: Path, make_record, dataset_writer) -> None:
    root = dataset_writer(tmp_path / "ds", _three_scenarios(make_record))
    train = load_split(root, "train")
    assert [r.name for r in train] == [
        "urban-para-train-000",
        "urban-para-train-001",
        "suburb-topo-train-003",
    ]
    only = load_split(root, "train", scenarios=["suburb-topo"])
    assert [r.name for r in only] == ["suburb-topo-train-003"]
    assert [r.name for r in load_split(root, "val")] == ["urban-para-val-002"]
    assert load_split(root, "val", scenarios=["suburb-topo"]) == []
    with pytest.raises(ValueError, match="hex-para"):
        load_split(root, "train", scenarios=["hex-para"])
    with pytest.raises(ValueError, match="split"):
        load_split(root, "training")


def test_load_split_errors(tmp_path: Path, make_record, dataset_writer) -> None:
    with pytest.raises(DatasetFormatError, match="manifest.json"):
        load_split(tmp_path / "empty", "train")
    root = dataset_writer(tmp_path / "ds", _three_scenarios(make_record))
    (root / "urban-para-val-002.npz").unlink()
    with pytest.raises(DatasetFormatError, match=r"urban-para-val-002\.npz.*missing"):
        load_split(root, "val")
    (root / "manifest.json").write_text("{broken")
    with pytest.raises(DatasetFormatError, match="manifest.json"):
        load_split(root, "train")
    (root / "manifest.json").write_text(json.dumps({"maps": [{"file": "x.npz"}]}))
    with pytest.raises(DatasetFormatError, match=r"manifest\.json.*maps\[0\]"):
        load_split(root, "train")


def test_load_split_rejects_wrong_split_in_file(tmp_path, make_record, dataset_writer) -> None:
    root = dataset_writer(tmp_path / "ds", _three_scenarios(make_record))
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["maps"][0]["split"] = "test"  # the file says train
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetFormatError, match="split"):
        load_split(root, "test")


def _batches(loader) -> list[tuple[list[int], list[int]]]:
    return [(b["map_index"].tolist(), b["start"].tolist()) for b in loader]


def test_loader_reproducible(make_record) -> None:
    recs = [make_record(5, 30), make_record(8, 30, seed=1), make_record(6, 25, seed=2)]
    kw = {"history": 4, "horizon": 2, "batch_size": 3}
    first = _batches(make_loader(recs, seed=7, **kw))
    assert first == _batches(make_loader(recs, seed=7, **kw))
    assert first != _batches(make_loader(recs, seed=8, **kw))
    loader = make_loader(recs, seed=7, **kw)
    assert _batches(loader) != _batches(loader)  # a new order each epoch
    ordered = _batches(make_loader(recs, shuffle=False, **kw))
    flat = [(m, s) for ms, ss in ordered for m, s in zip(ms, ss, strict=True)]
    ds = WindowDataset(recs, 4, 2)
    assert flat == [ds.index(i) for i in range(len(ds))]
    seen = sorted((m, s) for ms, ss in first for m, s in zip(ms, ss, strict=True))
    assert seen == sorted(flat)


def test_loader_with_worker_matches_in_process(make_record) -> None:
    recs = [make_record(5, 30), make_record(8, 30, seed=1)]
    kw = {"history": 4, "horizon": 2, "batch_size": 3, "seed": 5}
    assert _batches(make_loader(recs, num_workers=1, **kw)) == _batches(make_loader(recs, **kw))


def test_package_exports() -> None:
    import worldmodel.data as wd

    assert wd.make_loader is make_loader and wd.load_split is load_split
    assert set(wd.__all__) >= {"MapRecord", "load_map", "collate_maps", "WindowDataset"}
    with pytest.raises(AttributeError):
        wd.nope  # noqa: B018


def test_loader_batch_contents(make_record) -> None:
    recs = [make_record(5, 20), make_record(8, 20, seed=1)]
    for batch in make_loader(recs, history=4, horizon=2, batch_size=4, seed=0):
        assert tuple(batch) == BATCH_KEYS
        for b, (m, s) in enumerate(zip(batch["map_index"], batch["start"], strict=True)):
            rec = recs[int(m)]
            n = rec.n_cells
            assert int(batch["cell_mask"][b].sum()) == n
            got = batch["traffic"][b, :, :n].numpy()
            np.testing.assert_array_equal(got, rec.traffic[int(s) : int(s) + 6])


def test_loader_sampler_and_buckets(make_record) -> None:
    recs = [make_record(5, 30), make_record(8, 30, seed=1), make_record(5, 30, seed=2)]
    sampler = list(range(5))
    batches = _batches(make_loader(recs, 4, 2, batch_size=5, sampler=sampler))
    assert batches == [([0] * 5, [0, 2, 4, 6, 8])]
    loader = make_loader(recs, 4, 2, batch_size=4, bucket_by_size=True, seed=3)
    sizes = []
    for batch in loader:
        n = batch["cell_mask"].sum(1)
        sizes.append(len(set(n.tolist())))
    assert len(sizes) == len(loader)
    assert sum(s == 1 for s in sizes) >= len(sizes) - 1  # at most one mixed batch per pool
    again = make_loader(recs, 4, 2, batch_size=4, bucket_by_size=True, seed=3)
    assert _batches(again) == _batches(
        make_loader(recs, 4, 2, batch_size=4, bucket_by_size=True, seed=3)
    )
    with pytest.raises(ValueError, match="no windows"):
        make_loader([make_record(3, 5)], 4, 2)


def test_bucket_sampler_covers_everything() -> None:
    sizes = np.array([3, 9, 3, 9, 5, 5, 3, 9, 5, 3, 7])
    for drop_last in (False, True):
        s = SizeBucketBatchSampler(sizes, 3, torch.Generator().manual_seed(0), 2, drop_last)
        batches = list(s)
        assert len(batches) == len(s)
        flat = sorted(i for b in batches for i in b)
        if drop_last:
            assert all(len(b) == 3 for b in batches)
        else:
            assert flat == list(range(len(sizes)))


def test_dataset_summary(make_record) -> None:
    recs = _three_scenarios(make_record)
    summary = dataset_summary(recs)
    json.dumps(summary)  # JSON-ready
    assert summary["n_maps"] == 5
    assert summary["n_cells"] == 3 * 5 + 2 * 8
    assert summary["n_slots"] == 100
    values = np.concatenate([r.traffic[r.active] for r in recs]).astype(np.float64)
    assert summary["traffic"]["mean"] == pytest.approx(values.mean(), rel=1e-6)
    assert summary["traffic"]["std"] == pytest.approx(values.std(), rel=1e-5)
    assert summary["traffic"]["p50"] == pytest.approx(np.percentile(values, 50), rel=1e-6)
    assert summary["traffic"]["p99"] <= summary["traffic"]["max"]
    assert summary["param_change_share"] == pytest.approx(5 / 31)  # cell 1 of each map
    assert 0 < summary["active_change_share"] <= 1
    assert summary["scenarios"]["urban-para"] == {"maps": 3, "cells": 15, "slots": 60}
    assert summary["scenarios"]["suburb-topo"]["maps"] == 2
    assert summary["splits"] == {"test": 1, "train": 3, "val": 1}
    assert dataset_summary([])["n_maps"] == 0


# ---------------------------------------------------------------------------------------------
# Integration: the real "smoke" preset through the twin, load_split and make_loader.


@pytest.fixture(scope="module")
def smoke_root(tmp_path_factory) -> tuple[Path, float]:
    try:
        from worldmodel.data.generate import PRESETS, generate
    except ImportError as exc:  # twin builders still in progress
        pytest.skip(f"twin/generator not importable yet: {exc}")
    root = tmp_path_factory.mktemp("smoke")
    t0 = time.perf_counter()
    generate(PRESETS["smoke"], root, progress=False)
    return root, time.perf_counter() - t0


@pytest.mark.slow
def test_smoke_preset_end_to_end(smoke_root) -> None:
    root, seconds = smoke_root
    print(f"smoke generation: {seconds:.1f} s")
    train = load_split(root, "train")
    assert {r.metadata["scenario"] for r in train} == {"urban-para", "suburb-topo"}
    val = load_split(root, "val", scenarios=["urban-para"])
    assert len(val) == 2 and {r.metadata["split"] for r in val} == {"val"}
    assert val[1].metadata["branch_of"] == val[0].name  # the smoke preset has one branch
    assert val[1].od is val[0].od and val[1].facility is val[0].facility  # one copy in memory
    assert val[1].traffic is not val[0].traffic
    assert load_split(root, "val", scenarios=["suburb-topo"]) == []
    loader = make_loader(train, history=8, horizon=4, n_chunks=2, batch_size=2, seed=0)
    n_batches = 0
    for batch in loader:
        n_batches += 1
        assert tuple(batch) == BATCH_KEYS
        n_max = max(train[int(m)].n_cells for m in batch["map_index"])
        assert batch["traffic"].shape[1:] == (16, n_max)
        assert batch["cell_mask"].sum(1).tolist() == [
            train[int(m)].n_cells for m in batch["map_index"]
        ]
        assert torch.isfinite(batch["traffic"]).all()
        assert not (batch["active"] & ~batch["cell_mask"][:, None, :]).any()
        assert (
            batch["traffic"][~batch["cell_mask"][:, None, :].expand_as(batch["traffic"])] == 0
        ).all()
    assert n_batches == len(loader) > 0
    summary = dataset_summary(train)
    json.dumps(summary)
    assert summary["n_maps"] == 4 and summary["traffic"]["mean"] > 0
    ds = WindowDataset(train, history=8, horizon=4, n_chunks=2)
    assert ds.has_branches
    for i in range(len(ds)):
        (j,) = ds.siblings(i)
        (mi, si), (mj, sj) = ds.index(i), ds.index(j)
        assert si == sj and mi != mj
        assert train[mi].metadata.get("branch_of", train[mi].name) == train[mj].metadata.get(
            "branch_of", train[mj].name
        )


def test_older_memories_come_from_earlier_seasons(make_record) -> None:
    rec = make_record(4, 60)
    sib = make_record(4, 60, seed=1, name="map-b1")
    sib.metadata["branch_of"] = rec.name  # a counterfactual sibling of the same window
    kw = dict(history=12, horizon=2, n_chunks=2, stride=1, season=8, memory_age=4, seed=3)
    ds = WindowDataset([rec, sib], **kw)
    plain = WindowDataset([rec, sib], history=12, horizon=2, n_chunks=2, stride=1)
    window, n_mem = 16, 8
    seen: dict[int, int] = {}
    for i in range(len(ds)):
        m, start = ds.index(i)
        age = ds.memory_age_of(i)
        assert 1 <= age <= min(4, 1 + start // 8)
        item, src = ds[i], (rec, sib)[m]
        old = start - (age - 1) * 8
        for key in ("traffic", "actions", "active", "slot_of_day", "day_of_week", "od"):
            arr = getattr(src, key)
            np.testing.assert_array_equal(item[key][:n_mem].numpy(), arr[old : old + n_mem])
            np.testing.assert_array_equal(
                item[key][n_mem:].numpy(), arr[start + n_mem : start + window]
            )
        if age == 1:
            assert torch.equal(item["traffic"], plain[i]["traffic"])
        for j in ds.siblings(i):
            assert ds.memory_age_of(j) == age  # siblings remember the same slots
        seen[age] = seen.get(age, 0) + 1
    assert set(seen) == {1, 2, 3, 4}
    again = WindowDataset([rec, sib], **kw)
    assert [again.memory_age_of(i) for i in range(len(ds))] == [
        ds.memory_age_of(i) for i in range(len(ds))
    ]
    for bad in ({"memory_age": 0}, {"memory_age": 2, "season": 0}):
        with pytest.raises(ValueError, match="memory_age"):
            WindowDataset([rec], history=12, horizon=2, **bad)
