"""Fixtures shared by the test modules."""
import pytest

from fastspike import backends


@pytest.fixture
def fresh_backend_cache():
    """Backend choices are cached per (backend, device, environment): empty the cache before the test, so
    its monkeypatches and environment decide, and after it, so its choices do not outlive those patches."""
    backends._RESOLVED.clear()
    yield
    backends._RESOLVED.clear()
