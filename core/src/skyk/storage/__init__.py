"""Buckets: the stores cloud plugins provide, and the file mounts that use them."""
