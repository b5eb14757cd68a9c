"""What every benchmark script shares: the name of the machine it ran on (``recsize.resources.machine``)."""
from __future__ import annotations

from recsize.resources import machine

__all__ = ["machine"]
