"""`python -m proxy` runs the command line, the same as the `gitlab-pypi-proxy` script."""

from proxy.cli import main

raise SystemExit(main())
