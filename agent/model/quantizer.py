"""Mimi's split residual vector quantizer: latent frames <-> codes, one per codebook and frame.

The first (semantic) codebook and the other (acoustic) ones each quantize the same latent
through their own projections; their decoded vectors are summed. Within each part, every
codebook quantizes what the codebooks before it left over.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F


class Codebook(nn.Module):
    def __init__(self, size: int, dim: int):
        super().__init__()
        self.register_buffer("embedding", torch.zeros(size, dim))  # [size, dim] centroids

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, dim] -> index of the nearest centroid [B, T]."""
        flat = x.reshape(-1, x.shape[-1])
        distances = torch.cdist(flat[None], self.embedding[None], p=2)[0]  # [B * T, size]
        return distances.argmin(dim=-1).view(x.shape[:-1])

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return F.embedding(codes, self.embedding)  # [B, T] -> [B, T, dim]


class ResidualVectorQuantizer(nn.Module):
    def __init__(self, channels: int, dim: int, codebook_size: int, num_codebooks: int):
        super().__init__()
        self.input_proj = nn.Conv1d(channels, dim, 1, bias=False)
        self.output_proj = nn.Conv1d(dim, channels, 1, bias=False)
        self.codebooks = nn.ModuleList(Codebook(codebook_size, dim) for _ in range(num_codebooks))

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, channels, T] -> codes [B, K, T]."""
        residual = self.input_proj(x).transpose(1, 2)  # [B, T, dim]
        codes = []
        for codebook in self.codebooks:
            codes.append(codebook.encode(residual))
            residual = residual - codebook.decode(codes[-1])
        return torch.stack(codes, dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, K, T] -> [B, channels, T]."""
        quantized = self.codebooks[0].decode(codes[:, 0])  # [B, T, dim]
        for k in range(1, codes.shape[1]):
            quantized = quantized + self.codebooks[k].decode(codes[:, k])
        return self.output_proj(quantized.transpose(1, 2))


class SplitResidualVectorQuantizer(nn.Module):
    def __init__(self, channels: int, dim: int, codebook_size: int, num_codebooks: int):
        super().__init__()
        if num_codebooks < 2:
            raise ValueError("the split quantizer needs the semantic codebook and at least one more")
        self.rvq_first = ResidualVectorQuantizer(channels, dim, codebook_size, 1)
        self.rvq_rest = ResidualVectorQuantizer(channels, dim, codebook_size, num_codebooks - 1)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, channels, T] -> codes [B, num_codebooks, T]."""
        return torch.cat([self.rvq_first.encode(x), self.rvq_rest.encode(x)], dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, num_codebooks, T] -> [B, channels, T]."""
        return self.rvq_first.decode(codes[:, :1]) + self.rvq_rest.decode(codes[:, 1:])
