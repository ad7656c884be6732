"""skyk's Azure plugin. Importing it must not import an Azure SDK."""
