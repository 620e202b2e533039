"""What the service does: the signing pipeline, admission, the approval desk, the
policy governor, keys, ceremonies, second factors, the audit log, backups,
budgets, events and deliveries.

Each module is one use case over the store, the HSM and the domain packages
(policies, audit, hsm, chains).
"""
