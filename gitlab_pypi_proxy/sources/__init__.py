"""Upstream sources: one GitLab project, one GitLab group, or any PEP 503/691 index (base.py is
what a source is), and beside them the transport they share: the HTTP client (upstream.py), its
watched pools, the health it reports, and GitLab's request budget."""
