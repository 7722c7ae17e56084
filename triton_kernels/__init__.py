"""The 'triton' backend: fused Triton kernels, one module per op family (:mod:`.neuron`; shared helpers in
:mod:`.common`), installed as ``fastspike.triton_kernels``.

Triton ships its own top-level ``triton_kernels`` package, so this folder is mapped under ``fastspike``
(pyproject.toml, ``[tool.setuptools.package-dir]``) rather than installed at the top level.

Importing this package does not import Triton: :func:`unavailable_reason` loads the kernels on first use
(once per process), which defines the ops ``fastspike::triton_<family>_forward/_backward`` with their
autograd formulas. The kernels
run on CUDA tensors, and on CPU tensors only in Triton's interpreter (``TRITON_INTERPRET=1`` in the
environment before the kernels are loaded; slow, for tests). Computations whose state is float64 (fp64
inputs, or a fp64 stored state) run on the reference backend: the kernels keep fp32 state.
"""
from __future__ import annotations

from typing import Optional, Union

import torch

from .. import _leaky_ops, _neuron_ops, reference
from .._spec import LeakySpec, NeuronSpec, state_dtype

_STATE: Optional[tuple] = None


def _load() -> tuple:
    """(the kernel module or None, why it cannot be loaded or None), computed once."""
    global _STATE
    if _STATE is None:
        try:
            # Dynamo runs an import eagerly when it traces one, and the module registers its ops and their
            # autograd at import, so a torch.compile trace may be the first to get here.
            from . import leaky, neuron
        except ImportError as err:
            _STATE = None, (f"Triton is not installed or failed to import ({err}); install a torch build "
                            f"that ships it (CUDA wheels do) or `pip install triton`")
        else:
            _STATE = neuron, None
    return _STATE


def unavailable_reason(device_type: str) -> Optional[str]:
    """None when backend='triton' can run on ``device_type`` tensors, else why not and how to fix it."""
    module, reason = _load()
    if reason is not None:
        return reason
    if device_type == "cuda":
        if torch.version.hip is not None:
            return "the Triton kernels use NVIDIA PTX and libdevice; ROCm GPUs are not supported"
        if not torch.cuda.is_available():
            return "no CUDA device is available"
        return None
    if device_type == "cpu":
        if module.INTERPRETED:
            return None
        return ("Triton runs on CPU tensors only in its interpreter: set TRITON_INTERPRET=1 in the environment "
                "before fastspike first uses Triton (slow, meant for tests), or use a CUDA GPU")
    return f"the Triton kernels run on CUDA tensors (CPU ones under TRITON_INTERPRET=1), not {device_type}"


def neuron_multistep(spec: NeuronSpec, x_seq: torch.Tensor, v_init: Union[float, torch.Tensor],
                     w: Optional[torch.Tensor], store_v_seq: bool):
    """The Triton backend's neuron ``multistep`` (see :mod:`fastspike.backends`); call only when available."""
    state = state_dtype(x_seq.dtype)
    if isinstance(v_init, torch.Tensor):
        state = torch.promote_types(state, v_init.dtype)
    if state == torch.float64:
        return reference.neuron.multistep(spec, x_seq, v_init, w, store_v_seq)
    return _neuron_ops.multistep(torch.ops.fastspike.triton_neuron_forward.default,
                                 torch.ops.fastspike.triton_neuron_backward.default, spec, x_seq, v_init, w,
                                 store_v_seq)


def leaky_multistep(spec: LeakySpec, x_seq: torch.Tensor, syn_init, mem_init, beta, alpha, threshold, gsf,
                    state: torch.dtype, store_seq: bool):
    """The Triton backend's leaky ``multistep`` (see :func:`fastspike.reference.leaky.multistep`); call only
    when available."""
    if state == torch.float64:
        return reference.leaky.multistep(spec, x_seq, syn_init, mem_init, beta, alpha, threshold, gsf, state,
                                         store_seq)
    return _leaky_ops.multistep(torch.ops.fastspike.triton_leaky_forward.default,
                                torch.ops.fastspike.triton_leaky_backward.default, spec, x_seq, syn_init, mem_init,
                                beta, alpha, threshold, gsf, state, store_seq)
