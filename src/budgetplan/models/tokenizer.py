"""The tokenizer of a text model: its own, or a bundled one of exactly its vocabulary; never another's ids folded.

Where it comes from, in order: a path the caller gives (`--tokenizer`); the tokenizer saved beside the model (the
Hugging Face folder it was loaded from); a bundled tokenizer whose vocabulary is the model's — all-MiniLM-L6-v2's
WordPiece (30,522 tokens) or the bundled tiny models' WordPiece (assets/tiny-wordpiece-512, 512 tokens). A model
with none of these is refused in one line: its ids would mean nothing.
"""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from budgetplan.errors import ModelLoadError, first_line
from budgetplan.models import bundled
from budgetplan.models.load import LoadedModel

TINY_TOKENIZER = Path(__file__).resolve().parents[1] / "assets" / "tiny-wordpiece-512"
MINILM_VOCAB = 30522  # all-MiniLM-L6-v2's (bert-base-uncased's) WordPiece vocabulary
TINY_VOCAB = 512
# Files save_pretrained writes for a tokenizer (one of them is enough for AutoTokenizer).
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "tokenizer.model", "vocab.json")
HOW = "save the model's tokenizer beside it (tokenizer.save_pretrained(MODEL_DIR)) or pass --tokenizer PATH"


def has_tokenizer_files(folder: Path) -> bool:
    return folder.is_dir() and any((folder / name).is_file() for name in TOKENIZER_FILES)


def tokenizer_dir(loaded: LoadedModel, path: str | Path | None = None) -> Path:
    """The folder whose tokenizer `loaded` takes (see the module docstring); ModelLoadError when there is none."""
    if path is not None:
        folder = Path(path)
        if not has_tokenizer_files(folder):
            raise ModelLoadError(f"--tokenizer {folder}: no tokenizer files there ({', '.join(TOKENIZER_FILES)}); "
                                 "give a folder written by tokenizer.save_pretrained")
        return folder
    if loaded.source is not None and has_tokenizer_files(Path(loaded.source)):
        return Path(loaded.source)
    if loaded.vocab_size == TINY_VOCAB:
        return TINY_TOKENIZER
    if loaded.vocab_size == MINILM_VOCAB:
        return bundled.minilm_path()
    raise ModelLoadError(f"model {loaded.name} has no tokenizer (none saved beside it) and its vocabulary "
                         f"({loaded.vocab_size} tokens) is not a bundled tokenizer's; {HOW}")


def load_tokenizer(loaded: LoadedModel, path: str | Path | None = None):
    """The model's tokenizer, checked to fit its vocabulary, with a padding token (its eos or unk if it has none);
    a model config without a padding id is given the tokenizer's (see _tell_padding)."""
    folder = tokenizer_dir(loaded, path)
    try:
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ModelLoadError(f"could not read the tokenizer in {folder} ({first_line(exc, 120)}); {HOW}") from None
    if loaded.vocab_size is not None and len(tokenizer) > loaded.vocab_size:
        raise ModelLoadError(f"the tokenizer in {folder} has {len(tokenizer)} tokens but model {loaded.name}'s "
                             f"vocabulary has {loaded.vocab_size}; use the tokenizer the model was trained with")
    if tokenizer.pad_token is None:
        fill = tokenizer.eos_token or tokenizer.unk_token
        if fill is None:
            raise ModelLoadError(f"the tokenizer in {folder} has no padding, end or unknown token to pad with; "
                                 "set tokenizer.pad_token and save it again")
        tokenizer.pad_token = fill  # GPT-2 style tokenizers: pad with eos (the attention mask hides it)
    _tell_padding(loaded, tokenizer)
    return tokenizer


def _tell_padding(loaded: LoadedModel, tokenizer) -> None:
    """A classifier that pools its last real token (GPT-2, Llama, ... ForSequenceClassification) finds it by
    config.pad_token_id, and refuses batches without one: a config with none gets the tokenizer's padding id."""
    config = getattr(loaded.model.base, "config", None)
    if config is not None and hasattr(config, "pad_token_id") and config.pad_token_id is None:
        config.pad_token_id = tokenizer.pad_token_id
