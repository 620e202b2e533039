"""The gRPC edge: the server, servicers, interceptors, identities, config, errors,
logs, metrics and health.

Proto messages are decoded into frozen domain values here (requests.py) and
errors become statuses here (errors.ERROR_KINDS); nothing below sees a proto
request or a gRPC status.
"""
