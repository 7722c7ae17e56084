"""Triton kernels of fastspike, installed as ``fastspike.triton_kernels``.

Triton ships its own top-level ``triton_kernels`` package, so this folder is mapped under ``fastspike``
(pyproject.toml, ``[tool.setuptools.package-dir]``) rather than installed at the top level. The fused
forward/backward kernels of backend='triton' land here; until they do, :mod:`fastspike.backends` reports
the backend as unavailable.
"""
