"""Tools around the service, not part of it: the `custos` CLI, `custos init` (a
development set-up), `custos demo` and client profiles (mTLS channels).

The server never imports from here.
"""
