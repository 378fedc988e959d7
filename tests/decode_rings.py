"""Rings for the decode kernels' checks (tests/agent/model/test_cuda_kernels.py on a GPU,
scripts/check_kernels_interpreted.py on the CPU): rows at random ages, wrapped or not, reset, pinning."""

from __future__ import annotations

import torch

from agent.model.kv_cache import Turn, Visibility


def random_ring(B: int, S: int, generator: torch.Generator, device="cpu") -> tuple[torch.Tensor, torch.Tensor]:
    """Query positions [B] and key positions [B, S] of rows at random ages, some wrapped, one reset."""
    positions = torch.randint(0, 3 * S, (B,), generator=generator)
    positions[0] = 0
    key_positions = torch.full((B, S), -1)
    for row, position in enumerate(positions.tolist()):
        steps = torch.arange(max(0, position - S + 1), position + 1)
        key_positions[row, steps % S] = steps
    if B > 2:  # a row reset and restored from a 5-frame prefix, now at position 9
        positions[2] = 9
        key_positions[2] = -1
        key_positions[2, :10] = torch.arange(10)
    return positions.to(device), key_positions.to(device)


def pinned_ring(B: int, S: int, generator: torch.Generator, device="cpu") -> Visibility:
    """One query per row of rows that pinned a prompt (or none) and stepped on, some far past the wrap."""
    pinned = torch.randint(1, S // 2, (B,), generator=generator)
    pinned[1] = 0
    positions = pinned + torch.randint(0, 3 * S, (B,), generator=generator)
    positions[0] = pinned[0] + 3  # before the ring is full
    key_positions = torch.full((B, S), -1)
    for row, (position, count) in enumerate(zip(positions.tolist(), pinned.tolist())):
        steps = torch.arange(position + 1)
        slots = torch.where(steps < count, steps, count + (steps - count) % (S - count))
        key_positions[row].scatter_(0, slots, steps)
    return Visibility(positions[:, None].to(device), key_positions.to(device), S, S, pinned.to(device))


def random_turn(B: int, D: int, generator: torch.Generator, device="cpu") -> Turn:
    """A turn of each row's query by angles of any size: (cos, sin) [B, 1, 1, D/2] float32."""
    angles = torch.rand(B, 1, 1, D // 2, generator=generator) * 2000 - 1000
    return torch.cos(angles).to(device), torch.sin(angles).to(device)
