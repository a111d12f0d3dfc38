"""find-batch-size: the search and the injectable out-of-memory budget. Real probes on CPU and
micro_batch_size=auto in a training run: tests/integration/test_batch_size_probes.py."""

from __future__ import annotations


import pytest

from peftstudio.data.tokenization import TokenizedRow
from peftstudio.train.batch_size import candidate_sizes, search
from peftstudio.train.probe import Probe, worst_case_ids
from peftstudio.units import MIB


def fake_device(limit: int):
    return lambda size: Probe(size, size <= limit, size * MIB, 0.0)


@pytest.mark.parametrize("effective", [1, 6, 16, 64, 96])
def test_search_finds_the_largest_fitting_divisor_from_any_seed(effective):
    candidates = candidate_sizes(effective, None)
    for limit in range(0, effective + 2):
        expected = max((size for size in candidates if size <= limit), default=None)
        for seed in candidates:
            best, probes = search(candidates, seed, fake_device(limit))
            assert best == expected
            assert len({p.micro_batch_size for p in probes}) == len(probes), "no size probed twice"
            if seed == expected:
                assert len(probes) <= 2


def test_a_seed_off_by_a_few_sizes_still_needs_at_most_six_probes():
    candidates = candidate_sizes(128, None)
    for limit in (3, 8, 20, 64, 100):
        for seed in candidates:
            if abs(candidates.index(seed) - candidates.index(max(c for c in candidates if c <= limit))) <= 2:
                assert len(search(candidates, seed, fake_device(limit))[1]) <= 6


def test_candidates_keep_the_effective_batch_exactly():
    assert candidate_sizes(12, None) == [1, 2, 3, 4, 6, 12]
    assert candidate_sizes(12, 5) == [1, 2, 3, 4]


def test_the_probe_sample_is_the_longest_tokenized_row_or_a_full_packed_row():
    rows = [TokenizedRow(ids, ids) for ids in ([1, 2, 3], [4, 5, 6, 7, 8], [9])]
    assert worst_case_ids(rows, 16, packing=False) == [4, 5, 6, 7, 8]
    assert worst_case_ids(rows, 3, packing=False) == [4, 5, 6]
    assert worst_case_ids(rows, 12, packing=True) == [4, 5, 6, 7, 8, 1, 2, 3, 9, 4, 5, 6]
