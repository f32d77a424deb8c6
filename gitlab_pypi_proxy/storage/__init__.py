"""Where the proxy keeps things, behind two seams: the blob store for distribution files
(blobs.py; local_blobs.py on the cache directory) and the coordinator for what workers share
(coordinator.py; local_coordinator.py), with the download above them (downloads.py); and the
records the index keeps (pages.py, locations.py, details.py, metadata_store.py, uploads.py)."""
