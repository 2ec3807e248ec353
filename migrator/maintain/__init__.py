"""Upkeep of what is stored: compaction, key rotation, rebuilding local state."""
