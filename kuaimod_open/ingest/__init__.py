"""Stage 1, ingest: videos, benchmark rows and manifests become Samples with timed frames and text."""
