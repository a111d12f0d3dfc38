"""The baseline of `throughput.py`: a plain TRL SFTTrainer run with TRL's own defaults for
padding and packing (pad every batch to its longest sample, no packing, no padding-free),
fp32, no gradient checkpointing, the same LoRA settings as peftstudio's defaults.

Run by `throughput.py` in its own process; prints one JSON line: the non-padding tokens and
seconds of the steps after the first logging window (warm-up excluded), measured exactly as
peftstudio's metrics measure them.
"""

from __future__ import annotations

import argparse
import json
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    for name in ("model", "data", "output"):
        parser.add_argument(f"--{name}", required=True)
    for name in ("micro-batch", "steps", "max-seq-length", "log-interval"):
        parser.add_argument(f"--{name}", type=int, required=True)
    args = parser.parse_args()

    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import SFTConfig, SFTTrainer

    from peftstudio.data.prepare import prepare_data
    from peftstudio.config.schema import DataSettings

    rows = prepare_data(DataSettings(path=args.data, validation_split=0.0)).train_rows  # the same rows peftstudio trains on
    window = {"tokens": 0, "marks": []}

    class CountingTrainer(SFTTrainer):
        def training_step(self, model, inputs, num_items_in_batch=None):
            window["tokens"] += int(inputs["attention_mask"].sum())
            return super().training_step(model, inputs, num_items_in_batch)

    class Marks(TrainerCallback):
        def on_step_end(self, _args, state, control, **kwargs):
            if state.global_step % args.log_interval == 0:
                window["marks"].append((state.global_step, time.perf_counter(), window["tokens"]))

    config = SFTConfig(output_dir=args.output, per_device_train_batch_size=args.micro_batch, max_steps=args.steps,
                       max_length=args.max_seq_length, learning_rate=2e-4, bf16=False, fp16=False,
                       gradient_checkpointing=False, use_cpu=True, logging_steps=args.log_interval,
                       save_strategy="no", eval_strategy="no", report_to=[], disable_tqdm=True, seed=42)
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=torch.float32)
    trainer = CountingTrainer(model=model, args=config, train_dataset=Dataset.from_list(rows),
                              processing_class=AutoTokenizer.from_pretrained(args.model), callbacks=[Marks()],
                              peft_config=LoraConfig(r=16, lora_alpha=32, lora_dropout=0.05,
                                                     target_modules="all-linear", task_type="CAUSAL_LM"))
    trainer.train()
    (_, start, tokens_before), (last_step, end, tokens_after) = window["marks"][0], window["marks"][-1]
    losses = [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]
    print(json.dumps({"tokens": tokens_after - tokens_before, "seconds": end - start, "steps": last_step,
                      "final_loss": losses[-1]}))


if __name__ == "__main__":
    main()
