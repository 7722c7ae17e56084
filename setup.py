"""Build script.

All metadata lives in pyproject.toml. This file exists so the optional C++/CUDA extension (csrc/) can be
added as `ext_modules` without changing how the package is installed.
"""
from setuptools import setup

setup()
