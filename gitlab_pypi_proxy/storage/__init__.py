"""Where the proxy keeps things, behind three seams: the blob store for distribution files
(blobs.py; local_blobs.py on the cache directory), the coordinator for what workers share
(coordinator.py; local_coordinator.py), with the download above them (downloads.py), and the
index records (records.py; pages.py on the cache directory, shared_records.py with Redis), which
deliveries.py builds on; beside them, where files are listed (locations.py, a table of its own:
sqlite_db.py, as the file index's) and the stores of what the index learns (details.py,
metadata_store.py, provenance_store.py, uploads.py)."""
