import torch

from hf_ltbm.bench.memory import PeakMemory


def test_peak_of_live_tensors_on_cpu():
    before = torch.ones(1000, 1000)  # allocated before the block: not counted
    with PeakMemory("cpu") as mem:
        a = torch.zeros(1000, 1000)  # 4 MB
        b = a + 1  # 4 MB, peak 8 MB
        view = b[:10]  # a view: no new storage
        del a, b, view
        c = torch.zeros(500, 500)  # 1 MB, after the peak
    assert mem.peak_bytes == 8_000_000
    assert before.sum() == 1e6 and c.numel() == 250_000


def test_freed_memory_is_reused_in_the_count():
    with PeakMemory() as mem:
        for _ in range(5):
            t = torch.zeros(250_000)  # 1 MB each, one alive at a time (plus the next during assignment)
        del t
    assert mem.peak_bytes == 2_000_000
