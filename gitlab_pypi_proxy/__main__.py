"""`python -m gitlab_pypi_proxy`: the command line, as the `gitlab-pypi-proxy` script."""

from gitlab_pypi_proxy.cli import main

raise SystemExit(main())
