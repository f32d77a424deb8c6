"""gitlab-pypi-proxy: one PyPI index URL over GitLab package registries, with a verified cache."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("gitlab-pypi-proxy")  # pyproject.toml's, the one place it is written
except PackageNotFoundError:  # a source tree run without being installed
    __version__ = "unknown"
