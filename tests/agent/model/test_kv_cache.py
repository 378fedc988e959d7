"""The KV rings: what the FP8 ring stores and returns, and the visibility rule the decode kernel reads."""

import pytest
import torch

from agent.model.kv_cache import Fp8KVCache, KVCache, Visibility, kv_bytes_per_position, make_kv_cache

B, H, S, D = 3, 2, 40, 16


def filled(cache, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    k = torch.randn(B, H, S, D, generator=generator) * 3
    v = torch.randn(B, H, S, D, generator=generator)
    cache.write(torch.arange(S).expand(B, S), k, v)
    return k, v


def ring_positions(positions: list[int], capacity: int) -> torch.Tensor:
    """key_positions [B, capacity] of rows that stepped from 0 to each given position."""
    key_positions = torch.full((len(positions), capacity), -1)
    for row, position in enumerate(positions):
        for p in range(max(0, position - capacity + 1), position + 1):
            key_positions[row, p % capacity] = p
    return key_positions


def test_the_fp8_ring_holds_each_vector_within_its_rounding():
    generator = torch.Generator().manual_seed(0)
    cache = Fp8KVCache(B, H, S, D, "cpu")
    k, _ = filled(cache, generator)
    stored = cache.k.float() * cache.k_scale[..., None]
    # e4m3 keeps 3 mantissa bits: each element within 1/16 of itself, or of the vector's scale near zero
    bound = k.abs() / 16 + cache.k_scale[..., None] * 2 ** -6
    assert cache.k.dtype == torch.float8_e4m3fn
    assert (stored - k).abs().le(bound).all()
    assert torch.equal(cache.k.float().abs().amax(dim=-1), torch.full((B, H, S), 448.0))


def test_fp8_attention_is_close_to_full_precision_attention():
    generator = torch.Generator().manual_seed(1)
    full, fp8 = KVCache(B, H, S, D, "cpu", torch.float32), Fp8KVCache(B, H, S, D, "cpu")
    k, v = filled(full, generator)
    fp8.write(torch.arange(S).expand(B, S), k, v)
    visibility = Visibility(torch.tensor([[5], [100], [17]]), ring_positions([5, 100, 17], S), S, context=30)
    q = torch.randn(B, H, 1, D, generator=generator)
    expected = full.attend(q, visibility)
    error = (fp8.attend(q, visibility) - expected).norm() / expected.norm()
    assert 1e-4 < error < 0.05  # e4m3 rounds each element by up to 1/16


@pytest.mark.parametrize("capacity, context", [(40, 40), (40, 30), (16, None)])
def test_the_decode_window_is_the_mask(capacity, context):
    positions = [0, 3, 38, 39, 40, 41, 100, 250]
    key_positions = ring_positions(positions, capacity)
    key_positions[1, 2] = -1  # a slot made empty (a row reset, then partly refilled)
    visibility = Visibility(torch.tensor(positions)[:, None], key_positions, capacity, context)
    lowest, highest, keys = visibility.window
    window = (keys >= lowest[:, None]) & (keys <= highest[:, None])
    assert torch.equal(window, visibility.mask[:, 0, 0])
    assert window[4].sum() == min(capacity - 1, context or capacity)  # a full ring hides its oldest slot


def test_prefill_and_steps_see_the_same_fp8_keys():
    """A step's own key is read back from the ring, so T steps at once equal T single steps."""
    generator = torch.Generator().manual_seed(2)
    q, k, v = (torch.randn(1, H, 6, D, generator=generator) for _ in range(3))
    at_once, stepped = Fp8KVCache(1, H, 8, D, "cpu"), Fp8KVCache(1, H, 8, D, "cpu")
    positions = torch.arange(6)[None]
    key_positions = torch.full((1, 8), -1)
    key_positions[0, :6] = positions
    at_once.write(positions, k, v)
    together = at_once.attend(q, Visibility(positions, key_positions, 8, None))
    outputs = []
    for t in range(6):
        stepped.write(positions[:, t:t + 1], k[:, :, t:t + 1], v[:, :, t:t + 1])
        seen = torch.where(torch.arange(8) <= t, key_positions, -1)
        outputs.append(stepped.attend(q[:, :, t:t + 1], Visibility(positions[:, t:t + 1], seen, 8, None)))
    torch.testing.assert_close(together, torch.cat(outputs, dim=2), rtol=0, atol=1e-6)


def test_fp8_slots_take_about_half_the_bytes():
    assert kv_bytes_per_position(32, 128, torch.bfloat16, "bf16") == 2 * 32 * 128 * 2
    assert kv_bytes_per_position(32, 128, torch.bfloat16, "fp8") == 2 * 32 * (128 + 4)
    with pytest.raises(ValueError, match="unknown KV cache dtype 'int4'"):
        make_kv_cache("int4", 1, 1, 1, 1, "cpu", torch.float32)
