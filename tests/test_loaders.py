import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from colorize.data import loaders as loader_module
from colorize.data.augment import flip_generator, shift, shift_generator
from colorize.data.loaders import build_loaders, epoch_order
from colorize.errors import ConfigError
from colorize.settings import LOADERS, DataConfig

HERE = Path(__file__).parent


def collect(loader, epoch=0):
    loader.set_epoch(epoch)
    return [(b.l.clone(), b.ab.clone(), b.label.clone(), b.index.clone(), b.valid.clone()) for b in loader]


def loaders(data_dir, kind, **settings):
    return build_loaders(DataConfig(dir=str(data_dir), loader=kind, **settings))


@pytest.mark.parametrize("split", ["train", "test"])
def test_ffcv_and_memory_loaders_yield_identical_batches(small_dir, split):
    settings = dict(batch_size=16, train_limit=100, shift=3)
    ffcv, memory = loaders(small_dir, "ffcv", **settings), loaders(small_dir, "memory", **settings)
    for epoch in (0, 3):
        a, b = collect(ffcv[split], epoch), collect(memory[split], epoch)
        assert len(a) == len(b) == len(ffcv[split])
        for x, y in zip(a, b):
            for u, v in zip(x, y):
                assert torch.equal(u, v)


def test_eval_order_is_sequential_and_complete(small_dir):
    test = loaders(small_dir, "ffcv", batch_size=8)["test"]
    batches = collect(test)
    assert [len(b[3]) for b in batches] == [8, 8, 8, 8, 1]  # the last partial batch is kept
    assert torch.cat([b[3] for b in batches]).tolist() == list(range(33))
    assert all(b[4].all() for b in batches)


def test_train_order_changes_per_epoch_drops_partial_batch_and_flips(small_dir):
    train = loaders(small_dir, "memory", batch_size=10)["train"]
    first, second = collect(train, 0), collect(train, 1)
    assert len(first) == 10  # 108 samples -> 10 full batches
    order0, order1 = torch.cat([b[3] for b in first]), torch.cat([b[3] for b in second])
    assert not torch.equal(order0, order1) and len(set(order0.tolist())) == 100
    plain = loaders(small_dir, "memory", batch_size=10, hflip=False)["train"]
    unflipped = collect(plain, 0)
    flipped = [not torch.equal(a[0][i], b[0][i]) for a, b in zip(first, unflipped) for i in range(10)]
    assert 20 < sum(flipped) < 80
    i = flipped.index(True)
    assert torch.equal(first[i // 10][0][i % 10], unflipped[i // 10][0][i % 10].flip(-1))


@pytest.mark.parametrize("kind", ["ffcv", "memory"])
def test_flips_are_the_seeded_draws_of_each_epoch(small_dir, kind):
    # the rule that fixes every flip: one uniform draw per sample, batch after batch, from the
    # generator seeded by (seed, epoch, rank); below 0.5 flips the sample left to right
    flipped = loaders(small_dir, kind, batch_size=10)["train"]
    plain = loaders(small_dir, kind, batch_size=10, hflip=False)["train"]
    for epoch in (0, 2):
        draws = flip_generator(flipped.spec.seed, epoch, flipped.spec.rank)
        for a, b in zip(collect(flipped, epoch), collect(plain, epoch)):
            mask = (torch.rand(len(b[0]), generator=draws) < 0.5).view(-1, 1, 1, 1)
            assert torch.equal(a[0], torch.where(mask, b[0].flip(-1), b[0]))
            assert torch.equal(a[1], torch.where(mask, b[1].flip(-1), b[1]))


@pytest.mark.parametrize("kind", ["ffcv", "memory"])
def test_an_epoch_started_at_a_later_batch_yields_the_whole_epochs_rest(small_dir, kind):
    train = loaders(small_dir, kind, batch_size=10, shift=3)["train"]  # flipped and shifted
    whole = collect(train, 2)
    train.set_epoch(2, 4)
    rest = [(b.l.clone(), b.ab.clone(), b.label.clone(), b.index.clone(), b.valid.clone()) for b in train]
    assert len(whole) == 10 and len(rest) == 6
    for x, y in zip(whole[4:], rest):
        for u, v in zip(x, y):
            assert torch.equal(u, v)
    assert len(collect(train, 2)) == 10  # set_epoch alone starts at the first batch again


def test_shift_moves_each_image_by_its_offsets_with_mirrored_edges():
    image = torch.arange(2 * 6 * 5, dtype=torch.float32).view(1, 2, 6, 5)
    draws = torch.Generator().manual_seed(0)
    offsets = torch.randint(0, 5, (2, 1), generator=torch.Generator().manual_seed(0)).view(-1).tolist()
    moved = shift(image, 2, draws)
    mirrored_rows = [2, 1, 0, 1, 2, 3, 4, 5, 4, 3]  # row index of each padded row
    mirrored_cols = [2, 1, 0, 1, 2, 3, 4, 3, 2]
    rows = mirrored_rows[offsets[0]:offsets[0] + 6]
    cols = mirrored_cols[offsets[1]:offsets[1] + 5]
    assert offsets != [2, 2]  # the draw moves the image, so the test can fail
    assert torch.equal(moved, image[:, :, rows][:, :, :, cols])


@pytest.mark.parametrize("kind", ["ffcv", "memory"])
def test_shifts_are_the_seeded_draws_of_each_epoch_and_leave_flips_alone(small_dir, kind):
    shifted = loaders(small_dir, kind, batch_size=10, shift=3)["train"]
    flipped = loaders(small_dir, kind, batch_size=10)["train"]
    for epoch in (0, 2):
        draws = shift_generator(shifted.spec.seed, epoch, shifted.spec.rank)
        changed = 0
        for a, b in zip(collect(shifted, epoch), collect(flipped, epoch)):
            expected = shift(torch.cat([b[0], b[1]], 1), 3, draws)
            assert torch.equal(torch.cat([a[0], a[1]], 1), expected)
            changed += sum(not torch.equal(a[0][i], b[0][i]) for i in range(len(a[0])))
        assert changed > 80  # 1 in 49 samples keeps its place


def test_a_shift_beyond_the_image_is_refused_by_name(small_dir):
    with pytest.raises(ConfigError, match="data.shift=32 .* below 32"):
        loaders(small_dir, "ffcv", shift=32)
    with pytest.raises(ConfigError, match="data.shift"):
        DataConfig(shift=-1)


@pytest.mark.parametrize("kind", LOADERS)
def test_a_batch_larger_than_the_training_split_is_refused_by_name(small_dir, kind):
    """Training would otherwise run epochs of no batch and stop on a loss it never computed."""
    with pytest.raises(ConfigError, match="a batch of 109 images per process is more than the 108 training images"):
        loaders(small_dir, kind, batch_size=109)
    assert len(loaders(small_dir, kind, batch_size=108)["train"]) == 1


def test_batches_have_the_documented_shapes(small_dir):
    batch = next(iter(loaders(small_dir, "ffcv", batch_size=4)["val"]))
    assert batch.l.shape == (4, 1, 32, 32) and batch.ab.shape == (4, 2, 32, 32)
    assert batch.l.dtype == torch.float32 and batch.label.dtype == torch.int64
    assert 0 <= batch.l.min() and batch.l.max() <= 100


def test_epoch_order_pads_like_distributed_sampler():
    ranks = [epoch_order(10, 0, False, 0, rank, 4) for rank in range(4)]
    assert [len(r) for r in ranks] == [3, 3, 3, 3]
    assert sorted(np.concatenate(ranks).tolist()) == sorted(list(range(10)) + [0, 1])
    assert epoch_order(5, 2, True, 7, 0, 1).tolist() == np.random.default_rng(9).permutation(5).tolist()


def test_global_batch_size_must_divide():
    with pytest.raises(ConfigError, match="data.batch_size"):
        from colorize.data.loaders import per_process_batch_size

        per_process_batch_size(DataConfig(batch_size=10, batch_size_scope="global"), 3)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["ffcv", "memory"])
def test_two_gloo_processes_see_every_sample_once(small_dir, tmp_path, kind):
    out = tmp_path / "seen"
    subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(HERE / "dist_loader_worker.py"), str(small_dir), kind, str(out)],
        check=True, timeout=300,
    )
    seen = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert all(s["world"] == 2 for s in seen)
    for split, count in (("train", 108), ("test", 33)):
        real = sorted(seen[0][split]["real"] + seen[1][split]["real"])
        assert real == list(range(count)), split
    # 17 samples over 2 ranks: rank 1 gets one padding duplicate, flagged as not valid
    assert seen[0]["test_padded"] + seen[1]["test_padded"] == 1


def test_the_memory_loader_refuses_a_split_larger_than_the_free_memory(small_dir, monkeypatch):
    monkeypatch.setattr(loader_module, "free_memory", lambda device: 2**19)  # half a MiB free
    with pytest.raises(ConfigError, match=r"train.beton \(108 images, 1.3 MiB\) on cpu, which has 0.5 MiB free; "
                                          r"use data.loader=ffcv"):
        build_loaders(DataConfig(dir=str(small_dir), loader="memory", batch_size=16), splits=("train",))
    assert loader_module.free_memory(torch.device("cpu")) > 0


@pytest.mark.parametrize("free_mib, local_processes, kind", [(64, "1", "MemoryLoader"), (2, "1", "FfcvLoader"),
                                                              (4, "2", "FfcvLoader")])
def test_auto_holds_a_split_in_memory_only_where_it_fits(small_dir, monkeypatch, free_mib, local_processes, kind):
    """The 108 training images take 1.3 MiB: auto holds them in memory where that is at most half of
    the free memory (on the host, shared by this machine's processes), and reads FFCV otherwise."""
    monkeypatch.setattr(loader_module, "free_memory", lambda device: free_mib * 2**20)
    monkeypatch.setenv("LOCAL_WORLD_SIZE", local_processes)
    loader = build_loaders(DataConfig(dir=str(small_dir), loader="auto", batch_size=16), splits=("train",))["train"]
    assert type(loader).__name__ == kind
