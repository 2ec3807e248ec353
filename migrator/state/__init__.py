"""The state store: a fast, rebuildable index of the destination (store.py: StateDB, the facade;
tables/: one module per aggregate; backend.py: SQLite or PostgreSQL underneath), and the
private local files beside it (private.py)."""
