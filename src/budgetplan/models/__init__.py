"""Model loading (safe by default), block stack discovery and the task wrapper."""

from budgetplan.models.layout import BlockLayout, find_blocks
from budgetplan.models.load import LoadedModel, fingerprint, load_model, save_model_file, wrap_model
from budgetplan.models.task import TaskModel

__all__ = ["BlockLayout", "LoadedModel", "TaskModel", "find_blocks", "fingerprint", "load_model", "save_model_file",
           "wrap_model"]
