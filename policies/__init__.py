if __name__ != "custos.policies":  # one module, one name: never a second copy as `policies`
    raise ImportError(f"import custos.policies, not {__name__}")
