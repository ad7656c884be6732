"""Managed jobs: tasks that a controller sees through to the end, across preemptions and failures."""
