"""recsize: embedding-size search for recommender systems (the book's package; see the README).

Importing ``recsize`` imports nothing heavy, so that the command line installs its signal handlers before
torch is imported (Chapter 3); ``recsize.data`` and the other modules load when first used.
"""
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "data":  # `import recsize; recsize.data...` as before the import became lazy
        import importlib
        return importlib.import_module(".data", __name__)
    raise AttributeError(f"module 'recsize' has no attribute {name!r}")
