"""SGLang runtime plugin for skyk.

Only builds shell commands; SGLang itself is installed on the serving node by
the setup command, never imported here.
"""
