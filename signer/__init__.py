if __name__ != "custos.signer":  # one module, one name: never a second copy as `signer`
    raise ImportError(f"import custos.signer, not {__name__}")
