"""The index a client sees: a composition of wrappers around the sources, one behaviour per
module (index_protocol.py says the order; gitlab_pypi_proxy.services builds it), the file side
(files.py), and how core metadata is obtained (core_metadata.py, wheel_metadata.py)."""
