"""Plan federated fine-tuning for your own model and your own device class, end to end.

    .venv/bin/python examples/own_model.py [WORK_DIR]

1. Save a model in budgetplan's safe format: torch.save({"config": config.to_dict(), "state_dict": ...}).
   (Here a small 4-block BERT from a transformers config; use your pretrained model's config and weights.)
2. `budgetplan profile model.pt --json profile.json` measures every block state once.
3. `budgetplan solve --profile profile.json --device-file examples/my-board.toml --json plan.json`.
4. `budgetplan plan validate plan.json --model model.pt` checks the plan belongs to this model.
Each step is the CLI a user types; this script only runs them in order and stops at the first failure.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from transformers import BertConfig, BertModel

HERE = Path(__file__).resolve().parent
BUDGETPLAN = [sys.executable, "-m", "budgetplan"]


def save_model(path: Path) -> None:
    config = BertConfig(vocab_size=1000, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=64)
    torch.manual_seed(0)
    torch.save({"config": config.to_dict(), "state_dict": BertModel(config).state_dict()}, path)


def step(*args: str) -> None:
    print("$ budgetplan " + " ".join(args), flush=True)
    subprocess.run([*BUDGETPLAN, *args], check=True)


def main(work: Path) -> None:
    work.mkdir(parents=True, exist_ok=True)
    model, profile, plan = work / "model.pt", work / "profile.json", work / "plan.json"
    save_model(model)
    step("profile", str(model), "--batch-size", "4", "--seq-len", "32", "--lora-ranks", "4", "--num-labels", "2",
         "--json", str(profile))
    step("solve", "--profile", str(profile), "--device-file", str(HERE / "my-board.toml"), "--json", str(plan))
    step("plan", "validate", str(plan), "--model", str(model))


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="budgetplan-example-")))
