"""Plugins that ship with core, registered through the same hooks third parties use."""
