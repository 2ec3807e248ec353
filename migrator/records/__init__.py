"""Records as bytes: how JSONL and CSV are framed into records, read in blocks, and keyed."""
