"""The write stage: list, route, encode, store and commit a dataset's generation.

Its steps, each a module (or a few) that hands public pieces to the next:

- listing (listing.py): the records source listed once per generation into a file table;
  unchanged files are carried over from the last one, new and changed ones become routing
  tasks. Objects sources are listed once by sources/listing.py.
- routing (routing.py; route.py, route_blocks.py and routed.py for one file): tasks claimed by
  any worker under leases, each file routed into per-shard segments whose index is the
  checkpoint.
- encoding (encoding.py, records_change.py, objects_delta.py; shard_writer.py, pipeline.py,
  upload.py): per shard, the change since its last generation, sealed and stored as chunks
  and a manifest.
- committing (committer.py for chunks, generation.py for the generation record).

run.py orchestrates them (MigrationRun), fanout.py splits a sync into runs for a scheduler.
"""
