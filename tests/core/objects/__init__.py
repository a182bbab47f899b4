"""core.objects: one contract suite over both object stores (a directory, a real S3 server)."""
