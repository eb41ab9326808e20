"""The schemes `budgetplan compare` runs side by side, in a module of their own so the CLI can name them
without importing torch: (a) the plan, (b) CAFF last-k, (c) LoRA, (d) full, (e) head."""

SCHEMES = ("budgetplan", "caff", "lora", "full", "head")

LABELS = {"budgetplan": "(a) budgetplan", "caff": "(b) CAFF last-k", "lora": "(c) LoRA all blocks",
          "full": "(d) full fine-tuning", "head": "(e) head only"}
