"""gitlab-pypi-proxy: one PyPI index URL over GitLab package registries, with a verified cache."""

__version__ = "0.1.0"
