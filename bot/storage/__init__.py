"""Storage ports (Protocols) and their implementations."""
