"""Backend choice: the one place that decides which implementation runs a neuron op.

Names: ``'auto'`` | ``'torch'`` (pure-torch reference, always available) | ``'triton'`` | ``'native'``
(the compiled extension); ``'cupy'`` and ``'cuda'`` are SpikingJelly's names, aliases of ``'native'``.

- ``'auto'`` takes the first available backend for the tensor's device (CUDA: native, triton, torch;
  CPU: native, torch) and logs its choice once on the ``fastspike`` logger.
- ``'cupy'``/``'cuda'`` mean native where it is available and otherwise what ``'auto'`` picks (logged once
  with the reason), so SpikingJelly code that passes ``backend='cupy'`` runs unchanged.
- The environment variable ``FASTSPIKE_BACKEND`` (any name above) replaces ``'auto'``; an explicit name
  there counts as an explicit request.
- An explicit ``'torch'``, ``'triton'`` or ``'native'`` that cannot be met raises
  :class:`BackendUnavailableError` saying what is missing; an unknown name raises ``ValueError``.
"""
from __future__ import annotations

import logging
import os
from typing import Callable, Dict, Optional, Tuple

import torch

from . import native, reference, triton_kernels

logger = logging.getLogger("fastspike")

BACKENDS = ("torch", "triton", "native")
ALIASES = {"cupy": "native", "cuda": "native"}
_AUTO_ORDER = {"cuda": ("native", "triton", "torch"), "cpu": ("native", "torch")}
ENV_VAR = "FASTSPIKE_BACKEND"
NAMES = ("auto",) + BACKENDS + tuple(ALIASES)


class BackendUnavailableError(RuntimeError):
    """An explicitly requested backend cannot run here; the message says what to install or change."""


def canonical(backend) -> str:
    """Map a user-facing name to ``'auto'`` or one of :data:`BACKENDS`; ``ValueError`` if unknown."""
    if not isinstance(backend, str):
        raise TypeError(f"backend must be a string, got {type(backend).__name__}")
    name = ALIASES.get(backend, backend)
    if name != "auto" and name not in BACKENDS:
        raise ValueError(f"unknown backend {backend!r}; expected 'auto', "
                         f"{', '.join(repr(b) for b in BACKENDS)} or an alias {tuple(ALIASES)}")
    return name


def unavailable_reason(name: str, device_type: str, allowed: Tuple[str, ...] = BACKENDS) -> Optional[str]:
    """None when ``name`` can run on ``device_type`` for a caller that accepts ``allowed``, else why not
    and what would fix it."""
    if name not in allowed:
        return f"not supported by this module, which runs on {', '.join(allowed)} only"
    if name == "torch":
        return None
    if name == "triton":
        return triton_kernels.unavailable_reason(device_type)
    return native.unavailable_reason(device_type)


_RESOLVED: Dict[tuple, str] = {}


def _resolve(backend: str, device_type: str, env: Optional[str], allowed: Tuple[str, ...]) -> str:
    name = canonical(backend)
    source = f"backend={backend!r}"
    if name == "auto" and env:
        source = f"{ENV_VAR}={env!r}"
        try:
            backend, name = env, canonical(env)
        except ValueError as err:
            raise ValueError(f"{source}: {err}") from None
    skipped = []
    if backend in ALIASES:
        reason = unavailable_reason(name, device_type, allowed)
        if reason is None:
            return name
        name = "auto"
        skipped.append(f"{source} means native, which is unavailable: {reason}")
    if name == "auto":
        for candidate in _AUTO_ORDER.get(device_type, ("torch",)):
            reason = unavailable_reason(candidate, device_type, allowed)
            if reason is None:
                # Logging inside a torch.compile trace would break the graph; the eager call logs.
                if not torch.compiler.is_compiling():
                    logger.info("fastspike: %s on %s uses %r%s", source, device_type, candidate,
                                "".join(f"; {s}" for s in skipped))
                return candidate
            skipped.append(f"{candidate} skipped: {reason}")
    if name not in allowed:
        raise ValueError(f"{source}: {unavailable_reason(name, device_type, allowed)}")
    reason = unavailable_reason(name, device_type)
    if reason is not None:
        raise BackendUnavailableError(f"{source} is not available on {device_type}: {reason} "
                                      f"(backend='auto' uses what is available)")
    return name


def resolve(backend: str, device: torch.device, allowed: Tuple[str, ...] = BACKENDS) -> str:
    """The concrete backend that runs ``backend`` (a name, alias or 'auto') for tensors on ``device``,
    chosen among ``allowed`` (an explicit request outside it raises ``ValueError``).

    Results are cached per (backend, device type, FASTSPIKE_BACKEND, allowed), which also makes 'auto' log
    once. Nothing is cached while torch.compile traces, so the first eager call still logs the choice.
    """
    key = (backend, device.type, os.environ.get(ENV_VAR) or None, allowed)
    name = _RESOLVED.get(key)
    if name is None:
        name = _resolve(*key)
        if not torch.compiler.is_compiling():
            _RESOLVED[key] = name
    return name


def multistep_impl(backend: str, device: torch.device, family: str = "neuron") -> Callable:
    """The resolved backend's ``multistep`` function of op family ``family``: for 'neuron',
    ``multistep(spec, x_seq, v_init, w, store_v_seq)``; for 'leaky', that of
    :func:`fastspike.reference.leaky.multistep`."""
    return _IMPLS[family][resolve(backend, device)]


_IMPLS = {"neuron": {"torch": reference.neuron.multistep, "native": native.neuron_multistep,
                     "triton": triton_kernels.neuron_multistep},
          "leaky": {"torch": reference.leaky.multistep, "native": native.leaky_multistep,
                    "triton": triton_kernels.leaky_multistep}}
