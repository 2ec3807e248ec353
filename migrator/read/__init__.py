"""The read stage: chains from the destination, read-back, verify, restore, audit, cutover."""
