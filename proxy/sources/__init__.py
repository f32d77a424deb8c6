"""Upstream sources: one GitLab project, one GitLab group, or any PEP 503/691 index."""
