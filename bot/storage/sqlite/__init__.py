"""The SQLite implementation of the storage ports: every SQL statement lives here."""
