"""What several packages share and none owns: secp256k1 curve arithmetic and the
intent types (what a transaction does, as policy judges it).

A leaf: it imports nothing from custos, so hsm, policies and the chain adapters
can all depend on it without depending on each other.
"""

if __name__ != "custos.common":  # one module, one name: never a second copy as `common`
    raise ImportError(f"import custos.common, not {__name__}")
