"""Toy cloud: a fixed price list, credentials from TOYCLOUD_TOKEN."""
