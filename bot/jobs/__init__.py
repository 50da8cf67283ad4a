"""Background jobs: the batcher, the export, its scheduler, retention, rule reload."""
