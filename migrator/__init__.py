"""migrator: encrypted, resumable data migration into sovereign clouds."""
