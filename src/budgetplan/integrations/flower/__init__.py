"""Flower integration (optional extra `budgetplan[flower]`): plans run on Flower's Message API.

Nothing here imports flwr at package import time, so budgetplan works without the extra; the submodules
that need it are imported only after budgetplan.engines has checked the extra is installed.
"""

from __future__ import annotations

import os

# Flower reports usage to its servers unless told not to; read when flwr is first imported, i.e. after this.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
