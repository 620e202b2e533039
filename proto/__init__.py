if __name__ != "custos.proto":  # one module, one name: never a second copy as `proto`
    raise ImportError(f"import custos.proto, not {__name__}")
