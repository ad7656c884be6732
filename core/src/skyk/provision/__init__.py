"""Provisioning: the cloud interface plugins implement."""
