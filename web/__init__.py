"""The HTTP plumbing around api.py's resources: JSON errors, middleware
(body limit, bearer token, database connections) and Prometheus metrics."""
