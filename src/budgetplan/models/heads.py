"""Which head a loaded model has: its own task head (kept, with its trained weights) or none (a bare base).

Kept heads: sequence, image and audio classifiers (task "classification") and causal LMs (task "lm"), recognised
by the class name transformers gives them (config.architectures, or the module's own class). Any other
model is a base that gets budgetplan's head (models/task.py); the profile records which it was.
"""

from __future__ import annotations

import torch
import transformers
from torch import nn
from transformers import (
    AutoModel,
    AutoModelForAudioClassification,
    AutoModelForCausalLM,
    AutoModelForImageClassification,
    AutoModelForSequenceClassification,
)

from budgetplan.errors import ConfigError, ModelLoadError

HEAD_SUFFIXES = {"ForSequenceClassification": "classification", "ForImageClassification": "classification",
                 "ForAudioClassification": "classification", "ForCausalLM": "lm", "LMHeadModel": "lm"}
AUTO_TASK_CLASSES = {"classification": (AutoModelForSequenceClassification, AutoModelForImageClassification,
                                        AutoModelForAudioClassification),
                     "lm": (AutoModelForCausalLM,)}


def head_task(class_name: str | None) -> str | None:
    """The task of a kept head class ("classification" or "lm"), None for a base model or another head."""
    for suffix, task in HEAD_SUFFIXES.items():
        if class_name and class_name.endswith(suffix):
            return task
    return None


def module_head_task(module: nn.Module) -> str | None:
    return head_task(type(module).__name__)


def architecture_class(config, task: str | None):
    """The transformers class named by config.architectures when it is a kept head for `task` (any if None)."""
    for name in getattr(config, "architectures", None) or ():
        cls = getattr(transformers, name, None)
        own = head_task(name)
        if cls is not None and own is not None and task in (None, own):
            return cls
    return None


def named_base_class(config):
    """The base class config.architectures names when it is not a task model (e.g. T5EncoderModel, saved without
    the decoder that AutoModel's T5Model would add), else None."""
    for name in getattr(config, "architectures", None) or ():
        cls = getattr(transformers, name, None)
        if cls is not None and name.endswith("Model") and "For" not in name and "LMHead" not in name:
            return cls
    return None


def _keys_of(cls, config) -> set[str] | None:
    """State-dict keys of `cls` built from `config` on the meta device (no memory, no init), None if it can't."""
    try:
        with torch.device("meta"):
            model = cls.from_config(config) if hasattr(cls, "from_config") else cls(config)
    except (ValueError, KeyError, TypeError, AttributeError):
        return None
    return set(model.state_dict())


def checkpoint_class(config, keys: set[str], origin: str):
    """The class whose parameters are exactly `keys`: the named architecture, the base, or a task model.

    Whatever task is asked for: a head that contradicts it is refused later (resolve_task), never dropped.
    """
    candidates = [architecture_class(config, None), named_base_class(config), AutoModel]
    for classes in AUTO_TASK_CLASSES.values():
        candidates.extend(classes)
    tried = []
    for cls in (c for c in candidates if c is not None):
        expected = _keys_of(cls, config)
        if expected is None:
            continue
        missing = {k for k in expected - keys if not k.startswith("pooler.") and ".pooler." not in k}
        unexpected = keys - expected
        if not missing and not unexpected:
            return cls
        tried.append((len(missing) + len(unexpected), sorted(missing)[:3], sorted(unexpected)[:3]))
    _, missing, unexpected = min(tried) if tried else (0, [], sorted(keys)[:3])
    raise ModelLoadError(f"{origin}: state_dict does not match its config as a base model or a task model "
                         f"(missing {missing}, unexpected {unexpected}); save the config and weights of the same model")


def resolve_task(own_task: str | None, requested: str | None, class_name: str) -> str:
    """The task of the profile: the model's own head decides; a contradicting --task is refused."""
    if own_task is None:
        return requested or "classification"
    if requested not in (None, own_task):
        raise ConfigError(f"the model has its own {own_task} head ({class_name}); --task {requested} would replace "
                          f"it: leave --task out (or use --task {own_task}), or save the bare base model to get "
                          f"budgetplan's {requested} head")
    return own_task


def own_num_labels(model: nn.Module, task: str, requested: int | None) -> int:
    """Output size of the model's own head; a contradicting --num-labels is refused."""
    head = model.get_output_embeddings() if task == "lm" else None
    if head is not None:
        labels = int(head.weight.shape[0])
    else:
        labels = int(getattr(model.config, "vocab_size" if task == "lm" else "num_labels"))
    if requested is not None and requested != labels:
        raise ConfigError(f"--num-labels {requested}: the model's own head has {labels} outputs; leave "
                          "--num-labels out, or save the bare base model to get a new head")
    return labels
