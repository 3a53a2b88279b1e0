"""The object store: every S3 key in one place (`layout`) and the one boto3 class that reads and
writes them (`store`: write-once objects, conditional writes, presigning, outage retries).

May import: `compare_models.config` only. Every other stage imports this one; it imports none
of them.
"""
