import torch

from agent.engine.noise import uniform_noise


def test_noise_is_uniform_in_open_interval():
    u = uniform_noise(torch.arange(64), torch.zeros(64, dtype=torch.long), 4096)[:, 0]
    assert u.shape == (64, 4096)
    assert 0.0 < u.min() and u.max() < 1.0
    counts = torch.histc(u, bins=16, min=0.0, max=1.0)
    expected = u.numel() / 16
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 60  # 15 degrees of freedom: p < 1e-6 beyond this


def test_row_depends_only_on_its_seed_and_counter():
    alone = uniform_noise(torch.tensor([7]), torch.tensor([3]), 100, first_stream=2)[:, 0]
    batch = uniform_noise(torch.tensor([1, 7, 9]), torch.tensor([0, 3, 5]), 100, first_stream=2)[:, 0]
    assert torch.equal(alone[0], batch[1])


def test_seeds_counters_and_streams_give_different_noise():
    base = uniform_noise(torch.tensor([7]), torch.tensor([3]), 100, first_stream=0)[:, 0]
    for other in (
        uniform_noise(torch.tensor([8]), torch.tensor([3]), 100, first_stream=0)[:, 0],
        uniform_noise(torch.tensor([7]), torch.tensor([4]), 100, first_stream=0)[:, 0],
        uniform_noise(torch.tensor([7]), torch.tensor([3]), 100, first_stream=1)[:, 0],
    ):
        assert not torch.allclose(base, other)
        assert abs(torch.corrcoef(torch.stack([base[0], other[0]]))[0, 1]) < 0.35


def test_streams_drawn_together_equal_streams_drawn_one_by_one():
    seeds, counters = torch.tensor([3, 4]), torch.tensor([10, 11])
    together = uniform_noise(seeds, counters, 50, first_stream=1, streams=3)
    for i in range(3):
        assert torch.equal(together[:, i], uniform_noise(seeds, counters, 50, first_stream=1 + i)[:, 0])
