"""The `oaieval` engine: run one eval against one model and write a JSONL record."""
