"""Causal 1-d convolutions run on a stream of chunks, with their memory in per-row buffers.

A convolution's state is one preallocated tensor per layer, updated in place, so a batch of
independent streams steps together and any row can be reset by zeroing its slice. A zero buffer
is a fresh stream: it stands for the zero left padding upstream adds on a stream's first chunk.
Chunks are whole multiples of the stride (Mimi's 1920-sample frames always are), so the buffers
keep a fixed size.
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn as nn


class CausalConv1d(nn.Module):
    """Conv1d whose buffer holds the last inputs that the next chunk's first outputs still read."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 dilation: int = 1, groups: int = 1, bias: bool = True,
                 pad_mode: Literal["constant", "replicate"] = "constant"):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, kernel_size, stride, dilation=dilation,
                              groups=groups, bias=bias)
        self.pad_mode = pad_mode
        self.carried = (kernel_size - 1) * dilation + 1 - stride  # inputs kept for the next chunk
        if self.carried < 0:
            raise ValueError(f"stride {stride} exceeds the kernel size {kernel_size}")

    def init_state(self, batch_size: int, device=None, dtype=None) -> torch.Tensor:
        weight = self.conv.weight
        return torch.zeros(batch_size, self.conv.in_channels, self.carried,
                           device=device or weight.device, dtype=dtype or weight.dtype)

    def forward(self, x: torch.Tensor, buffer: torch.Tensor, fresh: torch.Tensor | None = None) -> torch.Tensor:
        """x [B, C_in, T] -> [B, C_out, T / stride]; `buffer` [B, C_in, carried] is updated in place.

        With replicate padding, `fresh` [B] bool marks the rows on their first chunk: upstream pads
        those with copies of their first sample instead of zeros.
        """
        stride = self.conv.stride[0]
        if x.shape[-1] % stride:
            raise ValueError(f"a chunk of {x.shape[-1]} steps is not a multiple of the stride {stride}")
        past = buffer
        if self.pad_mode == "replicate":
            if fresh is None:
                raise ValueError("replicate padding needs the rows' fresh flags")
            past = torch.where(fresh[:, None, None], x[..., :1], buffer)
        x = torch.cat([past, x], dim=-1)  # [B, C_in, carried + T]
        buffer.copy_(x[..., x.shape[-1] - self.carried:])
        return self.conv(x)


class CausalConvTranspose1d(nn.Module):
    """ConvTranspose1d whose buffer holds the tail of the last chunk's output that overlaps the next.

    The buffer stores that tail less the bias, which the next chunk's output already carries
    (upstream adds `partial - bias` the same way).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int,
                 groups: int = 1, bias: bool = True):
        super().__init__()
        if not stride <= kernel_size <= 2 * stride:
            raise ValueError(f"kernel size {kernel_size} must lie between the stride {stride} and twice it")
        self.convtr = nn.ConvTranspose1d(in_channels, out_channels, kernel_size, stride, groups=groups, bias=bias)
        self.overlap = kernel_size - stride

    def init_state(self, batch_size: int, device=None, dtype=None) -> torch.Tensor:
        weight = self.convtr.weight
        return torch.zeros(batch_size, self.convtr.out_channels, self.overlap,
                           device=device or weight.device, dtype=dtype or weight.dtype)

    def forward(self, x: torch.Tensor, partial: torch.Tensor) -> torch.Tensor:
        """x [B, C_in, T] -> [B, C_out, stride * T]; `partial` [B, C_out, overlap] is updated in place."""
        y = self.convtr(x)  # [B, C_out, stride * T + overlap]
        length = y.shape[-1]
        y[..., :self.overlap] += partial
        tail = y[..., length - self.overlap:]
        bias = self.convtr.bias
        partial.copy_(tail if bias is None else tail - bias[:, None])
        # A view, as upstream returns: on CPU the next ELU rounds differently on a contiguous copy.
        return y[..., :length - self.overlap]
