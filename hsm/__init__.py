if __name__ != "custos.hsm":  # one module, one name: never a second copy as `hsm`
    raise ImportError(f"import custos.hsm, not {__name__}")
