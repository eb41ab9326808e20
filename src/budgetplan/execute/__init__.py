"""Federated execution of a plan: datasets and partitions, client training, layer-wise aggregation, rounds."""
