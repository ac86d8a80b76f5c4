"""Train GEMEL's visual prefix projector on a frozen LM, keep the best dev checkpoint, evaluate it on test.

    python main.py                                   # the bundled offline demo (SmolLM2-135M, MiniLM)
    python main.py --dataset wikidiverse             # the paper's setting (OPT-6.7B, SimCSE, 16 demonstrations)
"""
import json
import math
import os
import time

import numpy as np
import torch
from tqdm import tqdm
from transformers import get_linear_schedule_with_warmup, set_seed

import fileio
import params
from evaluation import EvalSettings, evaluate
from experiment import checkpoint_path, load_experiment
from model import load_checkpoint, save_checkpoint
from utils import length_bucketed_batches


def make_optimizer(model, args, micro_steps_per_epoch):
    """AdamW (no decay on the bias) with linear warm-up and decay.

    The schedule is sized in optimizer steps. --legacy_optimizer reproduces the original instead: fp16
    weights and AdamW state, and a schedule sized in micro-steps but stepped per optimizer step.
    """
    if args.legacy_optimizer:
        model.linear.half()
    groups = [{"params": [model.linear.weight], "weight_decay": args.weight_decay},
              {"params": [model.linear.bias], "weight_decay": 0.0}]
    optimizer = torch.optim.AdamW(groups, lr=args.lr, eps=args.adam_epsilon)
    steps_per_epoch = math.ceil(micro_steps_per_epoch / args.accum_iter)
    total = args.train_epoch * (micro_steps_per_epoch if args.legacy_optimizer else steps_per_epoch)
    return optimizer, get_linear_schedule_with_warmup(optimizer, int(total * args.warmup_ratio), total)


def run_name(args):
    return os.path.splitext(params.checkpoint_name(args))[0]


def log_metrics(args, row):
    os.makedirs(args.log_dir, exist_ok=True)
    with open(os.path.join(args.log_dir, f"{run_name(args)}.metrics.jsonl"), "a", encoding="utf-8") as f:
        f.write(json.dumps(row) + "\n")


def save_config(args, path, extra):
    config = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, type(None), dict))}
    fileio.write_json(path, {**config, **extra})


def train(args, exp):
    model, builder, split = exp.model, exp.builder, exp.splits["train"]
    settings = EvalSettings.from_args(args)
    lengths = [builder.prompt_length(ex, d, with_target=True) for ex, d in zip(split.examples, split.demos)]
    micro_per_epoch = math.ceil(len(lengths) / args.train_bs)
    optimizer, scheduler = make_optimizer(model, args, micro_per_epoch)
    ckpt = checkpoint_path(args)
    state_file = os.path.join(args.ckpt_dir, f"{run_name(args)}.train_state.pt")
    state = {"global_step": 0, "epoch": 0, "batch": 0, "best_acc": float("-inf"), "best_step": None}
    if args.resume and os.path.exists(state_file):
        saved = torch.load(state_file, map_location="cpu", weights_only=False)
        model.linear.load_state_dict(saved["linear"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        state = saved["progress"]
        torch.set_rng_state(saved["torch_rng"])  # LM dropout draws continue exactly where they stopped
        if torch.cuda.is_available() and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state_all(saved["cuda_rng"])
        print(f"Resumed from {state_file} at step {state['global_step']}")

    trainable, frozen = model.parameter_counts()
    print(f"\n{'=' * 60}\nGEMEL training on {args.dataset} with {args.model_name}\n"
          f"  examples: train {len(split.examples)}, dev {len(exp.splits['dev'].examples)}\n"
          f"  demonstrations per example: {args.ICL_examples_num}, visual prefix tokens: {args.visual_prefix_length}\n"
          f"  micro-batch {args.train_bs} x accumulation {args.accum_iter} = effective batch "
          f"{args.train_bs * args.accum_iter}\n"
          f"  epochs {args.train_epoch}: {micro_per_epoch * args.train_epoch} micro-steps, "
          f"{math.ceil(micro_per_epoch / args.accum_iter) * args.train_epoch} optimizer steps, lr {args.lr}"
          f"{' (legacy fp16 optimizer)' if args.legacy_optimizer else ''}\n"
          f"  parameters: trainable {trainable:,} ({100.0 * trainable / (trainable + frozen):.3f}%), "
          f"frozen {frozen:,}\n{'=' * 60}")

    def evaluate_and_keep_best():
        acc, _ = evaluate(exp, exp.splits["dev"], settings)
        row = {"step": state["global_step"], "epoch": state["epoch"], "dev_acc": acc, "time": time.time()}
        if acc >= state["best_acc"]:  # as the original: a tie keeps the later checkpoint
            state["best_acc"], state["best_step"] = acc, state["global_step"]
            save_checkpoint(model, ckpt)
            save_config(args, os.path.splitext(ckpt)[0] + ".json",
                        {"best_dev_acc": acc, "best_step": state["global_step"]})
            print(f"New best dev acc {acc:.4f} %: saved {ckpt}")
            row["saved"] = ckpt
        log_metrics(args, row)
        model.train()

    total_micro = micro_per_epoch * args.train_epoch
    bar = tqdm(total=total_micro, initial=state["global_step"], desc="train", unit="step")
    loss_sum, loss_n = 0.0, 0
    model.train()
    for epoch in range(state["epoch"], args.train_epoch):
        state["epoch"] = epoch
        # the order depends on (seed, epoch) only, so a resumed run sees the same batches
        rng = np.random.default_rng(args.random_seed + epoch)
        batches = length_bucketed_batches(lengths, args.train_bs, shuffle=True, rng=rng)
        for b in range(state["batch"], len(batches)):
            idx = batches[b]
            batch = builder.collate([split.examples[i] for i in idx], [split.demos[i] for i in idx],
                                    split.images[idx], training=True)
            loss = model(batch)
            (loss / args.accum_iter).backward()
            if (b + 1) % args.accum_iter == 0 or b + 1 == len(batches):
                torch.nn.utils.clip_grad_norm_(model.linear.parameters(), args.max_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
            state["global_step"] += 1
            state["batch"] = b + 1
            loss_sum, loss_n = loss_sum + loss.item(), loss_n + 1
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", avg=f"{loss_sum / loss_n:.4f}")
            if state["global_step"] % 50 == 0:
                log_metrics(args, {"step": state["global_step"], "train_loss": loss_sum / loss_n,
                                   "lr": scheduler.get_last_lr()[0]})
            if args.do_eval and state["global_step"] % args.do_eval_steps == 0 and state["global_step"] < total_micro:
                evaluate_and_keep_best()
                save_train_state(state_file, model, optimizer, scheduler, state)
        state["batch"] = 0
    bar.close()
    if loss_n:
        log_metrics(args, {"step": state["global_step"], "train_loss": loss_sum / loss_n,
                           "lr": scheduler.get_last_lr()[0]})
    evaluate_and_keep_best()
    state["epoch"] = args.train_epoch
    save_train_state(state_file, model, optimizer, scheduler, state)
    return state


def save_train_state(path, model, optimizer, scheduler, progress):
    fileio.torch_save({"linear": model.linear.state_dict(), "optimizer": optimizer.state_dict(),
                       "scheduler": scheduler.state_dict(), "progress": dict(progress),
                       "torch_rng": torch.get_rng_state(),
                       "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}, path)


def main(argv=None):
    args = params.parse_args(argv, description="Train GEMEL")
    set_seed(args.random_seed)
    splits = ["train", "dev"] + (["test"] if args.do_test else [])
    exp = load_experiment(args, splits)
    state = train(args, exp)
    result = {"best_dev_acc": state["best_acc"], "best_step": state["best_step"]}
    if args.do_test:
        ckpt = checkpoint_path(args)
        load_checkpoint(exp.model, ckpt)
        print(f"Testing the best checkpoint {ckpt}")
        acc, records = evaluate(exp, exp.splits["test"], EvalSettings.from_args(args))
        fileio.write_jsonl(os.path.splitext(ckpt)[0] + ".test.predictions.jsonl", records)
        log_metrics(args, {"step": state["global_step"], "test_acc": acc, "checkpoint": ckpt})
        result["test_acc"] = acc
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
