"""medsearch query service (FastAPI); the REST API lands with the query-service issue."""
