"""Conv2d, Linear, MaxPool2d and AvgPool2d whose backward keeps a spike input as bits.

:func:`forward` runs a layer on ``x``. When ``x`` is a marked spike tensor (:mod:`fastspike._bits`) and
autograd is recording, it runs one of the autograd Functions below instead of the layer's torch forward;
each computes the same ATen op torch would and, in backward, the same ATen backward op with the same
arguments, so outputs and gradients are bit-identical to the unpacked path. What each one saves:

- Conv2d, Linear: the input packed 8 values per byte (``_bits.pack``); the weight and bias are parameters
  that exist anyway, so they are held by reference (not through ``save_for_backward``) and their version
  counters are checked in backward, as autograd does for saved tensors.
- MaxPool2d: the input packed, and no int64 indices: backward unpacks the 0/1 input and runs torch's own
  ``max_pool2d_with_indices`` on it again, which finds the first maximum of each window where the forward
  found it (ties included: it is the same kernel on the same values and strides).
- AvgPool2d: nothing; its backward needs only the input's shape and strides.

Cases left to the plain torch path: any input that is not marked, a non-dense input, Conv2d with
``padding_mode`` other than 'zeros' or a string padding, a Linear input that is not 2-D after the
``[T, N]`` merge, MaxPool2d with ``return_indices``. Under autocast, Conv2d and Linear cast their
arguments as autocast would (spikes stay 0/1) and run with autocast off.
"""
from __future__ import annotations

from typing import Callable, List, Optional

import torch
from torch import nn
from torch.nn.modules.utils import _pair

from ._bits import is_dense, is_spikes, mark, pack, unpack

aten = torch.ops.aten
_TORCH_TYPES = (nn.Conv2d, nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.Flatten)
MODE_ATTR = "_fastspike_memory_mode"


def _hold(ctx, tensors) -> None:
    """Keep ``tensors`` (None allowed) for backward: leaves by reference with their version (eager), the
    rest through ``save_for_backward`` after the packed bits already in ``ctx.to_save``."""
    compiling = torch.compiler.is_compiling()
    ctx.held, ctx.versions = [], []
    for t in tensors:
        by_ref = t is None or (not compiling and t.grad_fn is None)
        ctx.held.append(t if by_ref else len(ctx.to_save))
        ctx.versions.append(None if t is None or compiling else t._version)
        if not by_ref:
            ctx.to_save.append(t)
    ctx.save_for_backward(*ctx.to_save)


def _held(ctx) -> List[Optional[torch.Tensor]]:
    saved = ctx.saved_tensors
    out = []
    for h, version in zip(ctx.held, ctx.versions):
        t = saved[h] if isinstance(h, int) else h
        if version is not None and t._version != version:
            raise RuntimeError(f"fastspike: a tensor needed for gradient computation ({tuple(t.shape)}, "
                               f"{t.dtype}) has been modified by an inplace operation: it is at version "
                               f"{t._version}; expected version {version} instead")
        out.append(t)
    return out


class _Conv2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, stride, padding, dilation, groups):
        bits, ctx.meta = pack(x)
        ctx.args = (stride, padding, dilation, groups)
        ctx.to_save = [bits]
        _hold(ctx, (weight, bias))
        return aten.convolution(x, weight, bias, stride, padding, dilation, False, [0, 0], groups)

    @staticmethod
    def backward(ctx, grad):
        weight, bias = _held(ctx)
        x = unpack(ctx.saved_tensors[0], ctx.meta)
        stride, padding, dilation, groups = ctx.args
        mask = [ctx.needs_input_grad[0], ctx.needs_input_grad[1], bias is not None and ctx.needs_input_grad[2]]
        gx, gw, gb = aten.convolution_backward(grad, x, weight, None if bias is None else [bias.shape[0]],
                                               stride, padding, dilation, False, [0, 0], groups, mask)
        return gx, gw, gb, None, None, None, None


def _column_major(t: torch.Tensor) -> bool:
    return t.stride(0) == 1 and t.stride(1) == t.shape[0]


class _Linear(torch.autograd.Function):
    """``F.linear`` of a 2-D input; backward is torch's mm/addmm formula (FunctionsManual's
    ``mm_mat1_backward`` / ``mm_mat2_backward`` with their layout branches, and sum_to for the bias)."""

    @staticmethod
    def forward(ctx, x, weight, bias):
        bits, ctx.meta = pack(x)
        ctx.to_save = [bits]
        _hold(ctx, (weight, bias))
        return torch.nn.functional.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):
        weight, bias = _held(ctx)
        x = unpack(ctx.saved_tensors[0], ctx.meta)
        mat2 = weight.t()
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = mat2.mm(grad.t()).t() if _column_major(x) else grad.mm(mat2.t())
        if ctx.needs_input_grad[1]:
            gw = (grad.t().mm(x).t() if _column_major(mat2) else x.t().mm(grad)).t()
        if bias is not None and ctx.needs_input_grad[2]:
            gb = grad.sum(0)
        return gx, gw, gb


def _max_pool(x: torch.Tensor, args):
    """``max_pool2d_with_indices(x, *args)`` with both results in ``x``'s memory format, on CPU computed in
    channels_last: CPU's channels_last kernel is several times faster than its contiguous one and makes the
    same choices (each window scanned row by row, a value replacing the maximum only when greater: the first
    maximum), so values and indices are the same; only their layout differs, and it is converted back."""
    if x.device.type != "cpu" or x.dim() != 4 or x.is_contiguous(memory_format=torch.channels_last):
        return aten.max_pool2d_with_indices(x, *args)
    out, indices = aten.max_pool2d_with_indices(x.contiguous(memory_format=torch.channels_last), *args)
    return out.contiguous(), indices.contiguous()


class _MaxPool2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel, stride, padding, dilation, ceil_mode):
        bits, ctx.meta = pack(x)
        ctx.args = (kernel, stride, padding, dilation, ceil_mode)
        ctx.save_for_backward(bits)
        return _max_pool(x, ctx.args)[0]

    @staticmethod
    def backward(ctx, grad):
        x = unpack(ctx.saved_tensors[0], ctx.meta)
        indices = _max_pool(x, ctx.args)[1]
        return aten.max_pool2d_with_indices_backward(grad, x, *ctx.args, indices), None, None, None, None, None


class _AvgPool2d(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
        ctx.like = (x.shape, x.stride(), x.dtype, x.device)
        ctx.args = (kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)
        return aten.avg_pool2d(x, *ctx.args)

    @staticmethod
    def backward(ctx, grad):
        shape, stride, dtype, device = ctx.like
        # Read for its shape and strides only: avg_pool2d_backward never reads the input's values.
        like = torch.empty_strided(shape, stride, dtype=dtype, device=device)
        return (aten.avg_pool2d_backward(grad, like, *ctx.args),) + (None,) * 6


def _autocast(x, *params):
    """``(x, *params)`` cast as autocast casts a Conv2d/Linear's arguments, and the device type to turn
    autocast off for, or None when autocast is off."""
    device = x.device.type
    if not torch.is_autocast_enabled(device):
        return (x, *params), None
    dtype = torch.get_autocast_dtype(device)

    def cast(t):
        eligible = t is not None and t.dtype in (torch.float32, torch.float16, torch.bfloat16)
        return t.to(dtype) if eligible and t.dtype != dtype else t

    return tuple(cast(t) for t in (x, *params)), device


def _records(module: nn.Module, x: torch.Tensor) -> bool:
    return torch.is_grad_enabled() and (x.requires_grad or any(p.requires_grad for p in
                                                               module.parameters(recurse=False)))


def _conv(module: nn.Conv2d, x: torch.Tensor, base: Callable) -> torch.Tensor:
    if module.padding_mode != "zeros" or isinstance(module.padding, str) or x.dim() != 4:
        return base(x)
    (x, weight, bias), device = _autocast(x, module.weight, module.bias)
    args = (x, weight, bias, list(module.stride), list(module.padding), list(module.dilation), module.groups)
    if device is None:
        return _Conv2d.apply(*args)
    with torch.autocast(device, enabled=False):
        return _Conv2d.apply(*args)


def _linear(module: nn.Linear, x: torch.Tensor, base: Callable) -> torch.Tensor:
    if x.dim() != 2:
        return base(x)
    (x, weight, bias), device = _autocast(x, module.weight, module.bias)
    if device is None:
        return _Linear.apply(x, weight, bias)
    with torch.autocast(device, enabled=False):
        return _Linear.apply(x, weight, bias)


def _pool_args(module):
    kernel = list(_pair(module.kernel_size))
    stride = list(_pair(module.stride)) if module.stride not in (None, ()) else kernel
    return kernel, stride, list(_pair(module.padding))


def _maxpool(module: nn.MaxPool2d, x: torch.Tensor, base: Callable) -> torch.Tensor:
    if x.dim() not in (3, 4):
        return mark(base(x))
    kernel, stride, padding = _pool_args(module)
    return mark(_MaxPool2d.apply(x, kernel, stride, padding, list(_pair(module.dilation)), module.ceil_mode))


def _avgpool(module: nn.AvgPool2d, x: torch.Tensor, base: Callable) -> torch.Tensor:
    if x.dim() not in (3, 4):
        return base(x)
    kernel, stride, padding = _pool_args(module)
    return _AvgPool2d.apply(x, kernel, stride, padding, module.ceil_mode, module.count_include_pad,
                            module.divisor_override)


def forward(module: nn.Module, x: torch.Tensor, base: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """``module`` (a Conv2d, Linear, MaxPool2d, AvgPool2d or Flatten, torch's or fastspike's) applied to
    ``x``: through the packed Functions above when ``x`` is marked spikes, dense and autograd records,
    else ``base(x)`` (the module's torch forward). Outputs that are binary (max-pooling, flatten of spikes)
    are marked. The memory mode 'plain' (:func:`fastspike.functional.set_memory_mode`) turns it off."""
    if not is_spikes(x) or getattr(module, MODE_ATTR, None) == "plain":
        return base(x)
    if isinstance(module, nn.Flatten):
        return mark(base(x))
    if isinstance(module, nn.MaxPool2d):
        if module.return_indices:
            return base(x)
        return _maxpool(module, x, base) if _records(module, x) and is_dense(x) else mark(base(x))
    if not (_records(module, x) and is_dense(x)):
        return base(x)
    if isinstance(module, nn.Conv2d):
        return _conv(module, x, base)
    if isinstance(module, nn.Linear):
        return _linear(module, x, base)
    if isinstance(module, nn.AvgPool2d):
        return _avgpool(module, x, base)
    return base(x)


def _hooked(module: nn.Module) -> bool:
    from torch.nn.modules import module as m
    return bool(module._forward_hooks or module._forward_pre_hooks or module._backward_hooks
                or module._backward_pre_hooks or m._global_forward_hooks or m._global_forward_pre_hooks
                or m._global_backward_hooks or m._global_backward_pre_hooks)


def call(module, x: torch.Tensor) -> torch.Tensor:
    """``module(x)``; for a plain ``torch.nn`` Conv2d/Linear/MaxPool2d/AvgPool2d/Flatten without hooks
    (inside a SeqToANNContainer, say) through :func:`forward`, so a spike input is kept as bits there too.
    fastspike's layers do that in their own forward."""
    if type(module) in _TORCH_TYPES and is_spikes(x) and not _hooked(module):
        return forward(module, x, module.forward)
    return module(x)
