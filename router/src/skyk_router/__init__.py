"""skyk's router: the HTTP front door of a served model.

For now it is a skeleton that answers its own health check; replica
discovery, streaming (SSE) proxying and load-balancing policies come with
the serving feature.
"""

__version__ = "0.1.0"
