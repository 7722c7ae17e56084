"""The 'native' backend: fused C++ (CPU, OpenMP) and CUDA kernels from ``fastspike._C`` (built from csrc/).

``fastspike._C`` defines the ops ``torch.ops.fastspike.neuron_forward`` / ``neuron_backward`` (schemas and
layout contract in :mod:`fastspike._ops`) for CPU and, when built with a CUDA toolkit, CUDA tensors. This
module loads it on first use, checks that it was built from the sources beside it (an editable install
whose csrc/ changed since the build is reported as stale, not run), and registers the fake
implementations (torch.compile, meta tensors) and the autograd formula.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from . import _ops
from ._source_hash import source_hash

_CSRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "csrc")
_REBUILD = "rebuild it with `pip install --no-build-isolation -e .` (or `pip install .`) from the source tree"


_STATE: Optional[tuple] = None


def _load() -> tuple:
    """(the module or None, why it cannot be used or None), loaded and registered once.

    Done when fastspike is imported, so a torch.compile trace that resolves the backend only reads the
    cached result (it cannot trace file-system calls).
    """
    global _STATE
    if _STATE is None:
        _STATE = _load_uncached()
    return _STATE


def _load_uncached() -> tuple:
    try:
        from . import _C
    except ImportError as err:
        if isinstance(err, ModuleNotFoundError) and err.name == f"{__package__}._C":
            return None, ("fastspike._C is not built: this is a pure-Python install (FASTSPIKE_SKIP_BUILD=1, "
                          "or no C++ compiler or torch at build time); install from source with a C++ "
                          "compiler, e.g. `pip install --no-build-isolation -e .`")
        return None, (f"fastspike._C failed to load ({err}); it was probably built against another torch "
                      f"version (this is torch {torch.__version__}): {_REBUILD}")
    if os.path.isdir(_CSRC):
        current = source_hash(_CSRC)
        if _C.SOURCE_HASH != current:
            return None, (f"fastspike._C is stale: it was built from csrc/ sources {_C.SOURCE_HASH}, the tree "
                          f"now has {current}; {_REBUILD}")
    _register()
    return _C, None


def unavailable_reason(device_type: str) -> Optional[str]:
    """None when the native kernels can run on ``device_type``, else why not and how to fix it."""
    module, reason = _load()
    if reason is not None:
        return reason
    if device_type == "cpu":
        return None
    if device_type == "cuda":
        if not module.WITH_CUDA:
            return ("fastspike._C was built without CUDA kernels (no usable CUDA toolkit at build time); set "
                    f"CUDA_HOME to a toolkit matching torch's CUDA and {_REBUILD}")
        if not torch.cuda.is_available():
            return "no CUDA device is available"
        # Device queries cannot be traced; the eager call that follows a compiled one checks.
        if not torch.compiler.is_compiling():
            major, minor = torch.cuda.get_device_capability()
            if not runs_on(module.CUDA_ARCHS, major, minor):
                return (f"fastspike._C has no kernels for this GPU (compute capability {major}.{minor}; built "
                        f"for {module.CUDA_ARCHS}); set TORCH_CUDA_ARCH_LIST=\"{major}.{minor}\" and {_REBUILD}")
        return None
    return f"fastspike._C has kernels for CPU and CUDA tensors, not {device_type}"


def runs_on(archs: str, major: int, minor: int) -> bool:
    """Whether kernels built for ``archs`` (``_C.CUDA_ARCHS``, e.g. ``'80_90ptx'``) run on a GPU of compute
    capability major.minor: a cubin runs on its major version from its minor up, PTX on anything newer."""
    for entry in archs.split("_"):
        digits = entry[:-3] if entry.endswith("ptx") else entry
        if not digits.isdigit():
            return True  # a named architecture ('Hopper', ...): trust the build
        arch = (int(digits[:-1]), int(digits[-1]))
        if arch[0] == major and arch[1] <= minor or entry.endswith("ptx") and arch <= (major, minor):
            return True
    return False


def _fake_forward(x_seq, v_init, v_init_value, k, kind, v_threshold, v_reset, tau, decay_input,
                  detach_reset, surrogate, alpha, store_v_seq, save_h):
    return _ops.forward_outputs(x_seq, _ops.op_state_dtype(x_seq, v_init), store_v_seq, save_h)


def _fake_backward(grad_spike_seq, grad_v_last, grad_v_seq, h_seq, v_init, v_init_value, k, kind, *params):
    return _ops.backward_outputs(grad_spike_seq, h_seq, kind == "plif")


def _register() -> None:
    torch.library.register_fake("fastspike::neuron_forward")(_fake_forward)
    torch.library.register_fake("fastspike::neuron_backward")(_fake_backward)
    _ops.register_autograd("fastspike::neuron_forward", torch.ops.fastspike.neuron_backward.default)


def multistep(spec, x_seq, v_init, w, store_v_seq):
    """The native backend's ``multistep`` (see :mod:`fastspike.backends`); call only when available."""
    return _ops.multistep(torch.ops.fastspike.neuron_forward.default, torch.ops.fastspike.neuron_backward.default,
                          spec, x_seq, v_init, w, store_v_seq)


_load()
