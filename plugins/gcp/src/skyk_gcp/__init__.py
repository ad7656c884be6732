"""skyk's GCP plugin. Importing it must not import a Google SDK."""
