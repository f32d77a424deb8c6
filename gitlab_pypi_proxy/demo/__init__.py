"""A local trial without a GitLab: the GitLab test double, the sample distributions it serves, and
`gitlab-pypi-proxy demo`, which runs both with the proxy in front. The tests use the same double."""
