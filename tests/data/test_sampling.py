import torch

from src.data.sampling import ResumableBatchSampler


def test_epochs_are_seeded_permutations():
    s = ResumableBatchSampler(100, 10, seed=3)
    e0 = [i for b in s for i in b]
    s.set_epoch(1)
    e1 = [i for b in s for i in b]
    assert sorted(e0) == list(range(100)) and e0 != e1
    s2 = ResumableBatchSampler(100, 10, seed=3)
    assert [i for b in s2 for i in b] == e0


def test_start_batch_resumes_mid_epoch_once():
    s = ResumableBatchSampler(100, 10, seed=1)
    full = list(s)
    s.start_batch = 4
    assert list(s) == full[4:]
    assert list(s) == full, "the skip applies to one epoch only"


def test_shards_of_two_ranks_form_the_one_process_global_batches():
    one = list(ResumableBatchSampler(64, 8, seed=5))
    r0 = list(ResumableBatchSampler(64, 4, seed=5, rank=0, world_size=2))
    r1 = list(ResumableBatchSampler(64, 4, seed=5, rank=1, world_size=2))
    assert len(r0) == len(r1) == len(one)
    for g, a, b in zip(one, r0, r1):
        assert sorted(g) == sorted(a + b)


def test_drop_last_and_too_small():
    assert len(ResumableBatchSampler(25, 10)) == 2
    try:
        ResumableBatchSampler(5, 10)
    except ValueError as err:
        assert "batch_size" in str(err)
    else:
        raise AssertionError
