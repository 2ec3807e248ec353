"""Between the engine and the object store: stored objects, their names, reads and writes."""
