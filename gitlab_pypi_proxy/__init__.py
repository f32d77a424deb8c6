"""gitlab-pypi-proxy: one PyPI index URL over GitLab package registries, with a verified cache.

`__version__` is pyproject.toml's, the one place it is written, read when first asked for: the
installed metadata's reader (importlib.metadata, with email and zipfile) stays out of the
supervisor, which never asks."""

from typing import Any


def __getattr__(name: str) -> Any:
    if name != "__version__":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        found = version("gitlab-pypi-proxy")
    except PackageNotFoundError:  # a source tree run without being installed
        found = "unknown"
    globals()["__version__"] = found
    return found
