"""``python -m recsize.cli``: the ``recsize`` command (:func:`recsize.cli.main`). Explained in Chapter 3."""
import sys

from . import main

sys.exit(main())
