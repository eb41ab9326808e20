"""budgetplan's version: a leaf that imports nothing, so every stage (and the package face) can read it.

Keep it equal to `version` in pyproject.toml (tests/test_architecture.py checks).
"""

__version__ = "0.1.0"
