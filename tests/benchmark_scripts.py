"""The scripts under benchmarks/ as modules, for tests of their functions."""

import importlib.util
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def path(name: str) -> str:
    return os.path.join(ROOT, "benchmarks", f"{name}.py")


def load(name: str):
    """benchmarks/<name>.py, imported afresh."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", path(name))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
