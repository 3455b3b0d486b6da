def __getattr__(name: str):
    # old module paths that saved configs name (labkit/_compat.py's MOVED)
    if name.startswith("_"):  # (the import system's own questions, e.g. while importing labkit._compat itself)
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import labkit._compat

    return labkit._compat.moved_module(__name__, name)
