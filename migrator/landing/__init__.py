"""Landing: the archive's generations applied to where the new platform serves the data (plain
objects in its buckets, records in its database), and the proof that the landed copy holds
exactly what the archive does."""
