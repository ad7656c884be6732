"""vLLM runtime plugin for skyk.

Only builds shell commands; vLLM itself is installed on the serving node by
the setup command, never imported here.
"""
