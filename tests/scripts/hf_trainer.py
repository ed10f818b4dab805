"""A Hugging Face Trainer script: a tiny GPT-2 built from a config (no download), random token
data, a few steps; the Trainer writes its metrics to OUTPUT_DIR/metrics.json."""

import json
import os
import sys

import torch
from transformers import GPT2Config, GPT2LMHeadModel, Trainer, TrainingArguments

out = sys.argv[1]
torch.manual_seed(0)
model = GPT2LMHeadModel(GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=1, n_head=2))
ids = torch.randint(0, 64, (32, 16))
data = [{"input_ids": row, "labels": row} for row in ids]
args = TrainingArguments(output_dir=out, max_steps=4, per_device_train_batch_size=4, learning_rate=1e-3,
                         logging_steps=1, save_strategy="no", report_to=[], use_cpu=True, seed=0, data_seed=0,
                         disable_tqdm=True, dataloader_num_workers=0)
trainer = Trainer(model=model, args=args, train_dataset=data)
result = trainer.train()
os.makedirs(out, exist_ok=True)
with open(os.path.join(out, "metrics.json"), "w") as handle:
    json.dump({"train": {"loss": result.training_loss}}, handle)
print("done")
