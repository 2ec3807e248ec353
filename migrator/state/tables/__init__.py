"""The state store's operations, one module per aggregate: each reads and writes its own tables
through the shared Backend, and StateDB (state/db.py) is the facade over all of them.

- meta.py: the plan a store serves, dataset keys bound (sealing what an older release left plain)
- chunks.py: committed chunks, the fast path a resumed run looks them up by
- shards.py: shard status, stored manifests (heads), inventories, forgetting compacted ones
- routes.py: records routing checkpoints
- generations.py: a dataset's generations
- leases.py: shard leases, and the fence every shard write checks
- uploads.py: the multipart upload journal
- ledger.py: audit ledger heads, moved with the chunks their segments record
"""
