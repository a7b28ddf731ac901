"""The ingestion job: loaders per format, chunking, the incremental embed-then-upsert pipeline."""
