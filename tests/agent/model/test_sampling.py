import torch

from agent.model.sampling import Sampling, sample, top_k_mask

DRAWS = 20_000
CHI2_DF5_P999 = 20.52  # chi-square critical value, 5 degrees of freedom, p = 0.001
LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -0.5, -1.0])


def draw(logits: torch.Tensor, temperature: float, top_k: int, seed: int = 0) -> torch.Tensor:
    """DRAWS samples of one distribution, one per row."""
    uniform = torch.rand(DRAWS, logits.shape[0], generator=torch.Generator().manual_seed(seed))
    return sample(logits.expand(DRAWS, -1), torch.full((DRAWS,), temperature), torch.full((DRAWS,), top_k), uniform)


def chi_square(samples: torch.Tensor, probabilities: torch.Tensor) -> float:
    observed = torch.bincount(samples, minlength=probabilities.shape[0]).float()
    expected = probabilities * samples.shape[0]
    return float(((observed - expected) ** 2 / expected).sum())


def test_samples_follow_the_softmax_at_the_temperature():
    samples = draw(LOGITS, temperature=0.7, top_k=0)
    assert chi_square(samples, torch.softmax(LOGITS / 0.7, dim=0)) < CHI2_DF5_P999
    # The check has power: the distribution at another temperature is rejected.
    assert chi_square(samples, torch.softmax(LOGITS / 1.0, dim=0)) > CHI2_DF5_P999


def test_top_k_samples_follow_the_renormalised_top_k():
    samples = draw(LOGITS, temperature=1.5, top_k=3, seed=1)
    assert samples.max() <= 2
    expected = torch.softmax(LOGITS[:3] / 1.5, dim=0)
    observed = torch.bincount(samples, minlength=3)[:3].float()
    assert float(((observed - expected * DRAWS) ** 2 / (expected * DRAWS)).sum()) < 13.82  # df 2, p 0.001


def test_top_k_is_per_row():
    logits = torch.randn(3, 50, generator=torch.Generator().manual_seed(0))
    top_k = torch.tensor([1, 5, 0])
    allowed = [set(logits[row].topk(max(k, 1)).indices.tolist()) for row, k in enumerate(top_k.tolist())]
    seen = [set(), set(), set()]
    generator = torch.Generator().manual_seed(1)
    for _ in range(500):
        tokens = sample(logits, torch.full((3,), 5.0), top_k, torch.rand(3, 50, generator=generator))
        for row, token in enumerate(tokens.tolist()):
            seen[row].add(token)
    assert seen[0] == allowed[0]
    assert seen[1] == allowed[1]
    assert len(seen[2]) > 5  # top_k 0: the whole vocabulary


def test_zero_temperature_is_greedy_per_row():
    logits = torch.randn(4, 30, generator=torch.Generator().manual_seed(2))
    temperature = torch.tensor([0.0, -1.0, 0.0, 0.0])
    uniform = torch.rand(4, 30, generator=torch.Generator().manual_seed(3))
    assert torch.equal(sample(logits, temperature, torch.full((4,), 25), uniform), logits.argmax(dim=-1))


def test_same_noise_same_samples():
    logits = torch.randn(8, 100, generator=torch.Generator().manual_seed(4))
    uniform = torch.rand(8, 100, generator=torch.Generator().manual_seed(5))
    settings = Sampling.default(8)
    first = sample(logits, settings.audio_temperature, settings.audio_top_k, uniform)
    assert torch.equal(first, sample(logits, settings.audio_temperature, settings.audio_top_k, uniform.clone()))


def test_top_k_mask_keeps_exactly_k_even_with_ties():
    mask = top_k_mask(torch.zeros(2, 10), torch.tensor([3, 0]))
    assert mask.sum(dim=-1).tolist() == [3, 10]


def test_defaults_are_upstreams():
    settings = Sampling.default(2)
    assert torch.allclose(settings.text_temperature, torch.tensor([0.7, 0.7]))
    assert settings.text_top_k.tolist() == [25, 25]
    assert torch.allclose(settings.audio_temperature, torch.tensor([0.8, 0.8]))
    assert settings.audio_top_k.tolist() == [250, 250]
