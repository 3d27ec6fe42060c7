"""Test-suite settings: figures render off-screen."""
import os

os.environ.setdefault("MPLBACKEND", "Agg")
