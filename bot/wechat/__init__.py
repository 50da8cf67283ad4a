"""WeChat protocol: the push side (push.py) and the async API client (api.py)."""
