"""The storage ports on PostgreSQL: several replicas of ``bot serve`` share one database."""
