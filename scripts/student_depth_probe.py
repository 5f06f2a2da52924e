"""Which offline student learns rest14 fastest: dev F1 after a fixed number of fine-tuning steps.

    .venv/bin/python scripts/student_depth_probe.py minilm-l6 300 150,300
    .venv/bin/python scripts/student_depth_probe.py minilm-l6-d3 300 150,300
    .venv/bin/python scripts/student_depth_probe.py bert2bert 300 150,300   # HF EncoderDecoderModel, for reference
    .venv/bin/python scripts/student_depth_probe.py minilm-l6 300 100,200,300 --dropout 0 --lr 2e-4 --warmup 30

A plain loop, not the pipeline's fine-tuning stage: all rest14 train sentences in a seeded random order, batch 16,
AdamW at a constant lr (1e-4 unless --lr; --warmup: linear warm-up steps), the student's own dropout unless
--dropout, no distillation pretraining, greedy decoding of the first 150 dev sentences, scored
by the benchmark scorer (normal view). It isolates the student's shape from the recipe (docs/benchmarks.md,
"Which student"). `bert2bert` is transformers' generic encoder-decoder from the same checkpoint: CTranslate2 does
not convert it, so it is a yardstick, not a candidate.
"""

from __future__ import annotations

import argparse
import random
import time

import torch

from fsa_distill.benchmark.data import load_task_data
from fsa_distill.benchmark.scorer import score_predictions
from fsa_distill.benchmark.targets import linearise
from fsa_distill.core.config import resolve_config
from fsa_distill.models.student.batching import collate, tokenize_pairs
from fsa_distill.models.student.decoding import greedy_decode
from fsa_distill.models.student.warm_start import PRETRAINED, packaged_checkpoint, warm_start_bart


def bert2bert() -> tuple[object, object]:
    from transformers import AutoTokenizer, EncoderDecoderModel

    folder = str(packaged_checkpoint())
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = EncoderDecoderModel.from_encoder_decoder_pretrained(folder, folder)
    for config in (model.config, model.generation_config):
        config.decoder_start_token_id, config.eos_token_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        config.pad_token_id = tokenizer.pad_token_id
    return model, tokenizer


def main(student: str, steps: int, evals: list[int], lr: float, warmup: int, dropout: float | None,
         fresh_lr: float | None = None) -> None:
    torch.manual_seed(0)
    order_rng = random.Random(0)
    splits = load_task_data("atsa", "rest14", resolve_config("demo", overrides=["data.max_dev_sentences=150"]).data)
    if student == "bert2bert":
        model, tokenizer = bert2bert()
    else:
        model, tokenizer = warm_start_bart(packaged_checkpoint(PRETRAINED[student][0]), PRETRAINED[student][1])
    if dropout is not None:  # as load_student(dropout=...) does for the pipeline's fine-tuning
        for module in model.modules():
            if isinstance(getattr(module, "dropout", None), float):
                module.dropout = dropout
    train = tokenize_pairs(tokenizer, [s["sentence"] for s in splits["train"]],
                           [linearise(s, "atsa") for s in splits["train"]], 128, 128)
    if student == "bert2bert":  # its decoder starts from [CLS], so the labels leave it out
        train = [(source, target[1:]) for source, target in train]
    fresh = [p for name, p in model.named_parameters() if ".encoder_attn" in name]
    rest = [p for name, p in model.named_parameters() if ".encoder_attn" not in name]
    optimizer = torch.optim.AdamW([{"params": rest}, {"params": fresh, "lr": fresh_lr or lr}], lr=lr, fused=True)
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda done: min(1.0, (done + 1) / max(1, warmup)))
    dev, order, started = splits["dev"], [], time.perf_counter()
    for step in range(1, steps + 1):
        if not order:
            order = list(range(len(train)))
            order_rng.shuffle(order)
        batch, _ = collate([train[i] for i in order[:16]], tokenizer.pad_token_id)
        order = order[16:]
        model.train()
        model(**batch).loss.backward()
        optimizer.step()
        schedule.step()
        optimizer.zero_grad()
        if step in evals:
            outputs = (greedy_decode(model, tokenizer, [s["sentence"] for s in dev], 50, 40, 128)
                       if student != "bert2bert" else _decode_bert2bert(model, tokenizer, dev))
            f1 = score_predictions("atsa", dev, outputs, view="normal")["f1"]
            print(f"{student} step {step}: dev F1 x100 {100 * f1:.1f}, {len(set(outputs))} distinct outputs "
                  f"of {len(dev)}, {time.perf_counter() - started:.0f} s", flush=True)


@torch.no_grad()
def _decode_bert2bert(model, tokenizer, dev: list[dict]) -> list[str]:
    """Greedy, like the project's decoder (which expects a BART/T5 model)."""
    model.eval()
    batch = tokenizer([s["sentence"] for s in dev], padding=True, return_tensors="pt", return_token_type_ids=False)
    generated = model.generate(**batch, max_new_tokens=40, do_sample=False, num_beams=1)
    return [text.strip() for text in tokenizer.batch_decode(generated, skip_special_tokens=True)]


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("student", help="minilm-l6, minilm-l6-d3 or bert2bert")
    parser.add_argument("steps", type=int)
    parser.add_argument("evals", help="steps to score dev at, comma-separated")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--warmup", type=int, default=0)
    parser.add_argument("--dropout", type=float, default=None)
    parser.add_argument("--fresh-lr", type=float, default=None, help="lr of the fresh cross-attention")
    args = parser.parse_args()
    main(args.student, args.steps, [int(step) for step in args.evals.split(",")], args.lr, args.warmup, args.dropout,
         args.fresh_lr)
