"""budgetplan: measure, plan and verify layer-wise federated fine-tuning on small devices."""

__version__ = "0.1.0"
