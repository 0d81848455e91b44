"""Assistant Santé numérique: grounded, cited answers about France's digital-health strategy."""

__version__ = "0.1.0"
