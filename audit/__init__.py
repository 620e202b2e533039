if __name__ != "custos.audit":  # one module, one name: never a second copy as `audit`
    raise ImportError(f"import custos.audit, not {__name__}")
