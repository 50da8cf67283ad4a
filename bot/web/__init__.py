"""The HTTP edge: the push webhook, retry suppression, health and metrics."""
