import sys

import pytest
import torch

from boundgraph import allocator, keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux") or allocator._glibc() is None, reason="needs glibc")
def test_keep_freed_memory_takes_effect_under_glibc_and_tensors_still_work():
    assert keep_freed_memory() is True
    blocks = [torch.ones(2**22) for _ in range(3)]  # 16 MiB each: under the new mmap threshold, from the heap
    del blocks[0]
    assert float(torch.ones(2**22).sum()) == 2**22


def test_keep_freed_memory_changes_nothing_off_glibc(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert allocator._glibc() is None
    assert keep_freed_memory() is False
