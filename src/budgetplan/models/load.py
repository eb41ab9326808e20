"""Load a model safely: a bundled name, a Hugging Face directory, or a model.pt file.

model.pt holds {"config": <transformers config dict>, "state_dict": ...} and is read with weights_only=True.
A pickled whole nn.Module runs code when loaded, so it loads only with trust_pickle=True.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import pickle
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from huggingface_hub.errors import StrictDataclassError
from safetensors import SafetensorError, safe_open
from transformers import AutoConfig, AutoModel, PretrainedConfig
from transformers.utils import logging as hf_logging

from budgetplan.errors import ModelLoadError, first_line
from budgetplan.files import KINDS, kind_of
from budgetplan.models import bundled, heads
from budgetplan.models.layout import BlockLayout, find_blocks
from budgetplan.models.task import TASKS, TaskModel

os.environ.setdefault("HF_HUB_OFFLINE", "1")
hf_logging.disable_progress_bar()
hf_logging.set_verbosity_error()
TASK_PREFIX = "base."  # the base network's parameters live under this prefix in the task model


@dataclass(frozen=True)
class LoadedModel:
    name: str
    model: TaskModel
    layout: BlockLayout  # path relative to the task model, e.g. "base.encoder.layer"
    family: str
    input_kind: str  # "text", "image" or "audio"
    vocab_size: int | None
    max_positions: int | None
    image_size: int | None
    num_channels: int | None
    fingerprint: str
    source: str | None = None  # the folder or file it was loaded from (a bundled model's own folder); None: memory
    # The model's main input: input_ids, pixel_values, input_values (raw audio) or input_features (spectrogram).
    input_name: str = "input_ids"

    @property
    def blocks(self) -> nn.ModuleList:
        return self.model.get_submodule(self.layout.path)


def load_model(spec: str | nn.Module, *, num_labels: int | None = None, task: str | None = None,
               trust_pickle: bool = False, blocks: str | None = None) -> LoadedModel:
    """Load `spec` (bundled name, HF directory, model file, or an nn.Module in memory): a task model keeps its own
    head, a base gets one. A module in memory is used as is (not copied) and gets the same eager-attention switch.

    `task` None means the model's own head decides (classification for a bare base model).
    """
    if isinstance(spec, nn.Module):
        return wrap_model(spec, _display_name(spec), num_labels=num_labels, task=task, blocks=blocks)
    base, config, head_state, saved_task = _load_base(spec, trust_pickle)
    loaded = wrap_model(base, _display_name(spec), config=config, num_labels=num_labels, task=task or saved_task,
                        head_state=head_state, blocks=blocks)
    return replace(loaded, source=_source(str(spec)))


def wrap_model(base: nn.Module, name: str, *, config=None, num_labels: int | None = None, task: str | None = None,
               head_state: dict | None = None, blocks: str | None = None) -> LoadedModel:
    """A LoadedModel around an in-memory network: its own task head is kept, a bare base gets budgetplan's."""
    config = config if config is not None else getattr(base, "config", None)
    _use_eager_attention(base)
    own_task = heads.module_head_task(base)
    task = heads.resolve_task(own_task, task, type(base).__name__)
    if own_task is not None:
        model = TaskModel(base, None, heads.own_num_labels(base, task, num_labels), task, own_head=True)
    else:
        if getattr(base, "pooler", None) is not None:
            base.pooler = None  # the head pools itself; an unused pooler would hold weights no config trains
        model = TaskModel(base, _hidden_size(base, config), _num_labels(num_labels, head_state, task, config), task)
        if head_state is not None:
            try:
                model.head.load_state_dict(head_state)
            except RuntimeError as exc:
                raise ModelLoadError(f"{name}: the saved head does not fit the model ({first_line(exc, 120)}); "
                                     "save the head of this model") from None
    override = f"{TASK_PREFIX}{blocks}" if blocks else None
    layout = find_blocks(model, override)
    return LoadedModel(
        name=name, model=model, layout=layout, family=_family(base, config),
        input_kind=INPUT_KINDS.get(_input_name(base, config), "text"), input_name=_input_name(base, config),
        vocab_size=_vocab_size(base, config),
        max_positions=_max_positions(config), image_size=getattr(config, "image_size", None),
        num_channels=getattr(config, "num_channels", None), fingerprint=fingerprint(model),
    )


def fingerprint(model: nn.Module) -> str:
    """sha256 over (name, shape, dtype) of every parameter, LoRA adapters excluded."""
    digest = hashlib.sha256()
    for name, param in model.named_parameters():
        if "lora_" in name:
            continue
        digest.update(f"{name}:{tuple(param.shape)}:{param.dtype}\n".encode())
    return "sha256:" + digest.hexdigest()[:32]


def save_model_file(loaded: LoadedModel, path: str | Path) -> None:
    """Write the safe model.pt format (config dict + full task state dict)."""
    config = getattr(loaded.model.base, "config", None)
    if config is None:
        raise ModelLoadError("only transformers models can be saved as model.pt; save a plain module yourself")
    torch.save({"config": config.to_dict(), "state_dict": loaded.model.state_dict(), "task": loaded.model.task},
               path)


def _load_base(spec: str, trust_pickle: bool):
    """(network, config, budgetplan head weights or None, task the file was saved for or None)."""
    if spec in bundled.tiny_configs():
        return _build_tiny(spec)
    if spec == bundled.MINILM_NAME:
        return _load_hf_dir(bundled.minilm_path())
    path = Path(spec)
    if not path.exists():
        names = ", ".join(bundled.bundled_names())
        raise ModelLoadError(f"model '{spec}' not found: give an existing model.pt, a Hugging Face model directory, "
                             f"or a bundled name ({names})")
    if path.is_dir():
        return _load_hf_dir(path)
    return _load_file(path, trust_pickle)


def _build_tiny(name: str):
    config = bundled.tiny_config(name)
    config._attn_implementation = "eager"
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(bundled.TINY_SEED)
        base = AutoModel.from_config(config)
    return base, config, None, None


def _load_hf_dir(path: Path):
    """A save_pretrained directory: the class its config names when that is a kept task head, else the base."""
    if not (path / "config.json").is_file():
        kind = kind_of(path)
        what = f"is {KINDS[kind]}, not a model" if kind else "is a directory without config.json"
        raise ModelLoadError(f"{path} {what}; point at a Hugging Face model directory (it holds config.json)")
    try:
        config = AutoConfig.from_pretrained(path)
        config._attn_implementation = "eager"
        _check_layer_count(config, _weight_count(path), path)
        _check_fits_memory(config, path)
        # A kept head, else the base class it was saved as, else AutoModel (a head contradicting `task` is refused).
        cls = heads.architecture_class(config, None) or heads.named_base_class(config) or AutoModel
        base = cls.from_pretrained(path, config=config)
    except ModelLoadError:
        raise
    except (*BUILD_ERRORS, OSError, SafetensorError) as exc:
        raise ModelLoadError(f"could not load the Hugging Face model in {path} ({first_line(exc, 160)}); "
                             "check config.json and the weights file (a truncated download: fetch it again)") from None
    return base, config, None, None


# What a bad config or weights file raises inside transformers/torch while a model is built or filled.
BUILD_ERRORS = (ValueError, TypeError, KeyError, AttributeError, RuntimeError, IndexError, ZeroDivisionError,
                OverflowError, StrictDataclassError)


def _check_layer_count(config, num_tensors: int | None, path) -> None:
    """Refuse a config that claims more blocks than its weights hold tensors (each block holds at least one)
    before anything is built: building even on the meta device takes minutes for 10**4 blocks, forever for 10**6."""
    layers = getattr(config, "num_hidden_layers", None)
    if num_tensors is not None and isinstance(layers, int) and layers > num_tensors:
        raise ModelLoadError(f"{path}: its config says num_hidden_layers = {layers}, but its weights hold only "
                             f"{num_tensors} tensors; save the config and weights of the same model")


def _weight_count(path: Path) -> int | None:
    """Tensors in a Hugging Face directory's safetensors weights (read from the headers only), None when unknown."""
    index = path / "model.safetensors.index.json"
    try:
        if index.is_file():
            return len(json.loads(index.read_text()).get("weight_map", {}))
        if (path / "model.safetensors").is_file():
            with safe_open(str(path / "model.safetensors"), framework="pt") as weights:
                return len(list(weights.keys()))
    except (OSError, ValueError, AttributeError, SafetensorError):
        return None  # the loader says what is wrong with the weights
    return None


def _check_fits_memory(config, path) -> None:
    """Refuse a config whose parameters alone exceed the memory available now (counted on the meta device)."""
    import psutil

    with torch.device("meta"):
        meta = AutoModel.from_config(config)
    need = sum(p.numel() * p.element_size() for p in meta.parameters())
    available = psutil.virtual_memory().available
    if need > available:
        raise ModelLoadError(f"{path}: the model's {sum(p.numel() for p in meta.parameters()):,} parameters need "
                             f"{need / 2**30:.1f} GiB, but {available / 2**30:.1f} GiB of memory is available; "
                             "check the config's sizes (hidden size, layers, vocabulary) or use a smaller model")


def _builds(config, path) -> bool:
    try:
        with torch.device("meta"):
            AutoModel.from_config(config)
    except BUILD_ERRORS:
        return False
    return True


def _build_from_config(cls, config, path):
    """The model `cls` builds from `config`, after checking on the meta device that it builds and fits memory."""
    try:
        _check_fits_memory(config, path)
        return cls.from_config(config) if hasattr(cls, "from_config") else cls(config)
    except BUILD_ERRORS as exc:
        raise ModelLoadError(f"{path}: its config cannot build a model ({first_line(exc, 160)}); fix the config "
                             "(e.g. the hidden size must be a whole number divisible by the number of heads)") from None


def _load_file(path: Path, trust_pickle: bool):
    kind = kind_of(path)
    if kind is not None and kind != "torch":
        raise ModelLoadError(f"{path} is {KINDS[kind]}, not a model; {MODEL_FIX}")
    if trust_pickle:
        obj = _torch_load(path, weights_only=False)
        if isinstance(obj, nn.Module):
            return obj, getattr(obj, "config", None), None, None
    else:
        obj = _torch_load(path, weights_only=True)
    return _from_checkpoint_dict(obj, path)


MODEL_FIX = "give a model.pt, a Hugging Face model directory or a bundled name"
SAVE_HINT = ("torch.save({'config': model.config.to_dict(), 'state_dict': model.state_dict()}, PATH), or "
             "model.save_pretrained(DIR) and give DIR")


def _torch_load(path: Path, weights_only: bool):
    try:
        return torch.load(path, map_location="cpu", weights_only=weights_only)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" in str(exc) or "weights_only" in str(exc).lower() and "GLOBAL" in str(exc):
            raise ModelLoadError(
                f"{path} contains pickled Python objects (e.g. a whole nn.Module), and loading it would run code "
                "from the file; pass --trust-pickle only if you trust its origin, or re-save it as "
                "torch.save({'config': config.to_dict(), 'state_dict': model.state_dict()})"
            ) from None
        raise _corrupt(path, exc) from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, AttributeError, ImportError, KeyError,
            TypeError, IndexError, OverflowError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EISDIR, errno.ENOENT):
            raise ModelLoadError(f"cannot read {path} ({exc.strerror}); check the path and its permissions") from None
        raise _corrupt(path, exc) from None


def _corrupt(path: Path, exc: Exception) -> ModelLoadError:
    """What is wrong with a file torch could not load, judged from the file itself where it can be."""
    size = path.stat().st_size if path.is_file() else 0
    with path.open("rb") as handle:
        head = handle.read(64)
    if size == 0:
        why, fix = "is empty (a truncated download or copy)", "re-save or re-download it"
    elif head.startswith(b"PK") and not zipfile.is_zipfile(path):
        why, fix = f"is a truncated torch file ({size:,} bytes, its end cut off)", "re-save or re-download it"
    elif head.lstrip()[:1] in (b"{", b"["):
        why, fix = "is a JSON file, not a torch file", MODEL_FIX
    elif head and all(32 <= b < 127 or b in b"\t\r\n" for b in head):
        why, fix = "is a text file, not a torch file", MODEL_FIX
    elif not head.startswith((b"PK", b"\x80")):
        why, fix = "is not a torch file (it starts with neither a zip nor a pickle header)", MODEL_FIX
    else:
        why = f"is corrupt, truncated or not a torch file ({_clip(first_line(exc, 160), 120)})"
        fix = f"re-save or re-download it, or {MODEL_FIX}"
    return ModelLoadError(f"{path} {why}; {fix}")


def _clip(text: str, limit: int) -> str:
    """`text` cut at the last word that fits in `limit` characters, with '...' when cut."""
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0].rstrip(" ,.;:(") + " ..."


def _from_checkpoint_dict(obj, path: Path):
    """{"config", "state_dict"}: a base model's, a task model's (e.g. keys under "bert." plus "classifier."),
    or budgetplan's own save_model_file form (keys under "base." and "head.")."""
    if isinstance(obj, dict) and obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelLoadError(f"{path} holds a bare state dict (parameter name -> tensor) without the model's config, "
                             f"so no model can be built from it; save it as {SAVE_HINT}")
    if not isinstance(obj, dict) or "config" not in obj or "state_dict" not in obj:
        raise ModelLoadError(f"{path} is not a budgetplan model file: expected a dict with 'config' "
                             f"(a transformers config dict) and 'state_dict'; save the model as {SAVE_HINT}")
    config = _config_from_dict(obj["config"], path)
    config._attn_implementation = "eager"
    state = obj["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise ModelLoadError(f"{path}: 'state_dict' must map parameter names to tensors (got "
                             f"{type(state).__name__}); save model.state_dict()")
    head_state = None
    if any(k.startswith(TASK_PREFIX) for k in state):
        head_state = {k[len("head."):]: v for k, v in state.items() if k.startswith("head.")}
        state = {k[len(TASK_PREFIX):]: v for k, v in state.items() if k.startswith(TASK_PREFIX)}
    _check_layer_count(config, len(state) + len(head_state or {}), path)
    # Which class fits the keys is only asked of a config that builds at all (else every candidate "mismatches").
    cls = heads.checkpoint_class(config, set(state), str(path)) if _builds(config, path) else None
    base = _build_from_config(cls, config, path)
    dtype = next((v.dtype for v in state.values() if v.is_floating_point()), None)
    if dtype is not None:
        base.to(dtype)  # a bf16/fp16 checkpoint stays in its dtype (loading would cast it to float32)
    try:
        missing, unexpected = base.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # size mismatches
        raise ModelLoadError(f"{path}: state_dict does not fit its config ({first_line(exc, 120)}...); save the "
                             "config and weights of the same model") from None
    missing = [k for k in missing if "pooler." not in k]
    if missing or unexpected:
        raise ModelLoadError(f"{path}: state_dict does not match its config (missing {missing[:3]}, "
                             f"unexpected {unexpected[:3]}); save the config and weights of the same model")
    saved_task = obj.get("task") if obj.get("task") in TASKS else None
    return base, config, head_state or None, saved_task


def _config_from_dict(data, path: Path) -> PretrainedConfig:
    if not isinstance(data, dict) or "model_type" not in data:
        raise ModelLoadError(f"{path}: 'config' must be a transformers config dict with a 'model_type'")
    data = dict(data)
    model_type = data.pop("model_type")
    try:
        return AutoConfig.for_model(model_type, **data)
    except BUILD_ERRORS as exc:
        raise ModelLoadError(f"{path}: config of model_type '{model_type}' cannot be read ({first_line(exc, 160)}); "
                             "use a transformers model type and its config fields") from None


def _use_eager_attention(base: nn.Module) -> None:
    """Eager attention: the fused SDPA CPU kernel is invisible to FLOP counters."""
    config = getattr(base, "config", None)
    if config is not None and hasattr(config, "_attn_implementation"):
        config._attn_implementation = "eager"
    if config is not None and hasattr(config, "use_cache"):
        config.use_cache = False  # training keeps no KV cache; a cache would also leak between profiled runs
    if config is not None and getattr(config, "layerdrop", 0):
        # LayerDrop skips random layers in training, so a step's cost would be random: budgetplan trains (and
        # plans for) every layer, the most a step can cost.
        config.layerdrop = 0.0
    if callable(getattr(base, "freeze_feature_encoder", None)):
        # Audio encoders (wav2vec2, HuBERT, ...) otherwise make their raw input require a gradient, so backward
        # runs through the frozen convolutional feature encoder into the waveform: the fine-tuning convention.
        base.freeze_feature_encoder()


def _hidden_size(base: nn.Module, config) -> int:
    for attr in ("hidden_size", "n_embd", "d_model"):
        if config is not None and getattr(config, attr, None):
            return int(getattr(config, attr))
    layers = [m for m in base.modules() if isinstance(m, (nn.LayerNorm, nn.RMSNorm))]
    if layers:
        return int(layers[-1].normalized_shape[-1])
    raise ModelLoadError("cannot tell the model's hidden size; give a transformers model or one ending in "
                         "LayerNorm or RMSNorm")


def _num_labels(num_labels, head_state, task, config) -> int:
    if head_state is not None:
        return int(head_state["weight"].shape[0])
    if task == "lm":
        return int(config.vocab_size)
    return int(num_labels or 2)


def _vocab_size(base: nn.Module, config) -> int | None:
    """The config's vocabulary, else the size of the model's first embedding table (a plain torch model)."""
    if config is not None and getattr(config, "vocab_size", None):
        return int(config.vocab_size)
    return next((m.num_embeddings for m in base.modules() if isinstance(m, nn.Embedding)), None)


INPUT_KINDS = {"input_ids": "text", "pixel_values": "image", "input_values": "audio", "input_features": "audio"}


def _input_name(base: nn.Module, config) -> str:
    """The model's main input (transformers' main_input_name); a plain module with an image config takes pixels."""
    name = getattr(base, "main_input_name", None)
    if name in INPUT_KINDS:
        return name
    return "pixel_values" if _is_vision(config) else "input_ids"


def _is_vision(config) -> bool:
    return config is not None and hasattr(config, "image_size") and hasattr(config, "patch_size")


def _max_positions(config) -> int | None:
    for attr in ("max_position_embeddings", "n_positions"):
        if config is not None and getattr(config, attr, None):
            return int(getattr(config, attr))
    return None


def _family(base: nn.Module, config) -> str:
    return getattr(config, "model_type", None) or type(base).__name__.lower()


def _source(spec: str) -> str | None:
    """Where a model was loaded from: a path made absolute, MiniLM's package folder, None for a built tiny model."""
    if spec == bundled.MINILM_NAME:
        return str(bundled.minilm_path())
    if spec in bundled.tiny_configs():
        return None
    return str(Path(spec).resolve())


def _display_name(spec) -> str:
    if isinstance(spec, nn.Module):
        return type(spec).__name__
    return spec if spec in bundled.bundled_names() else Path(spec).name
