"""The task spec: SkyPilot-compatible task YAML as pydantic models."""
