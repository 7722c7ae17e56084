"""The 'native' backend: fused C++ (CPU, OpenMP) and CUDA kernels from ``fastspike._C`` (built from csrc/).

``fastspike._C`` implements each op family's ops ``torch.ops.fastspike.<family>_forward`` / ``_backward``
(schemas in :mod:`fastspike._contract`, defined here before the extension registers its kernels) for CPU
and, when built with a CUDA toolkit, CUDA tensors. This module loads it on first use, checks that it was
built from the sources beside it (an editable install whose csrc/ changed since the build is reported as
stale, not run), and registers each family's fake implementations (torch.compile, meta tensors) and
autograd formula.
"""
from __future__ import annotations

import os
from typing import Optional

import torch

from . import _contract, _leaky_ops, _neuron_ops, _ops
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
    _contract.define_native_ops()
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


def _register() -> None:
    ops = torch.ops.fastspike
    _ops.register(_neuron_ops.FAMILY, ops.neuron_forward.default, ops.neuron_backward.default)
    _ops.register(_leaky_ops.FAMILY, ops.leaky_forward.default, ops.leaky_backward.default)


def neuron_multistep(spec, x_seq, v_init, w, store_v_seq):
    """The native backend's neuron ``multistep`` (see :mod:`fastspike.backends`); call only when available."""
    return _neuron_ops.multistep(torch.ops.fastspike.neuron_forward.default,
                                 torch.ops.fastspike.neuron_backward.default, spec, x_seq, v_init, w, store_v_seq)


def leaky_multistep(spec, x_seq, syn_init, mem_init, beta, alpha, threshold, gsf, state, store_seq):
    """The native backend's leaky ``multistep`` (see :func:`fastspike.reference.leaky.multistep`); call only
    when available."""
    return _leaky_ops.multistep(torch.ops.fastspike.leaky_forward.default, torch.ops.fastspike.leaky_backward.default,
                                spec, x_seq, syn_init, mem_init, beta, alpha, threshold, gsf, state, store_seq)


_load()
