"""FP8 e4m3: rows quantised with one float32 scale each, and the linear layer of FP8 weights.

A weight [out, in] is quantised per output channel (each row over its own amax / 448), once, at
load; activations are quantised per token at every call, the same way. On Hopper the product is
`torch._scaled_mm` (FP8 tensor cores, float32 accumulation, both scales applied in its epilogue);
elsewhere, and for shapes it does not take (a dimension not a multiple of 16, float32
activations), the same quantised operands are multiplied in float32: the reference.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0


def quantize_rows(x: torch.Tensor, fused: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """x [..., D] -> FP8 values [..., D] and float32 scales [...]: x ~ values * scales[..., None].

    `fused` (CUDA only) does it in one Triton kernel, the same arithmetic.
    """
    if fused:
        from agent.model.cuda_kernels import quantize_rows_fp8
        values, scale = quantize_rows_fp8(x.reshape(-1, x.shape[-1]))
        return values.view(x.shape), scale.view(x.shape[:-1])
    amax = x.abs().amax(dim=-1, keepdim=True).float()
    scale = (amax / FP8_MAX).clamp(min=torch.finfo(torch.float32).tiny)
    values = (x.float() / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8)
    return values, scale[..., 0]


def dequantize_rows(values: torch.Tensor, scale: torch.Tensor, dtype: torch.dtype, fused: bool = False) -> torch.Tensor:
    """values [..., D] and scales [...] -> values * scales[..., None] in `dtype`, computed in float32.

    `fused` (CUDA only) does it in one Triton kernel, the same arithmetic and rounding.
    """
    if fused:
        from agent.model.cuda_kernels import dequantize_rows_fp8
        return dequantize_rows_fp8(values, scale, dtype)
    return (values.float() * scale[..., None]).to(dtype)


def fp8_linear(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x [..., in] @ (weight * scale[:, None]).T for an FP8 weight [out, in] and scales [out] float32."""
    out_features, in_features = weight.shape
    rows = x.reshape(-1, in_features)
    if scaled_mm_fits(x, out_features, in_features):
        values, row_scales = quantize_rows(rows, fused=True)
        y = torch._scaled_mm(values, weight.t(), scale_a=row_scales[:, None], scale_b=scale[None],
                             out_dtype=x.dtype)
    else:
        values, row_scales = quantize_rows(rows)
        y = F.linear(dequantize_rows(values, row_scales, torch.float32),
                     dequantize_rows(weight, scale, torch.float32)).to(x.dtype)
    return y.view(*x.shape[:-1], out_features)


def scaled_mm_fits(x: torch.Tensor, out_features: int, in_features: int) -> bool:
    """Whether `torch._scaled_mm` takes this product: CUDA, bfloat16 out, sizes multiples of 16."""
    return x.is_cuda and x.dtype == torch.bfloat16 and out_features % 16 == 0 and in_features % 16 == 0


@torch.no_grad()
def quantize_weight(weight: torch.Tensor) -> tuple[torch.nn.Parameter, torch.Tensor]:
    """A weight [out, in] as FP8 values (a frozen parameter, so it counts among the model's) and
    its float32 scales [out]."""
    values, scale = quantize_rows(weight)
    return torch.nn.Parameter(values, requires_grad=False), scale
