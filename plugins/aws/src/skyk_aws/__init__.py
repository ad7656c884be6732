"""skyk's AWS plugin. Importing it must not import boto3: catalogs need no SDK."""
