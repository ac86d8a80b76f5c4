"""Train GEMEL's visual prefix projector on a frozen LM, keep the best dev checkpoint, evaluate it on test.

    python main.py                                   # the bundled offline demo (SmolLM2-135M, MiniLM)
    python main.py --dataset wikidiverse             # the paper's setting (OPT-6.7B, SimCSE, 16 demonstrations)
    python main.py --method drin                     # DRIN, the candidate reranker (mel/drin/run.py)
    torchrun --nproc_per_node 2 main.py              # data parallel: docs/scaling-out.md
"""
import contextlib
import json
import math
import time

import numpy as np
import torch
from tqdm import tqdm
from transformers import get_linear_schedule_with_warmup, set_seed

import params
from mel.drin.run import train_ranker
from mel.errors import DataError
from mel.fusion import run as fusion
from mel.gemel.evaluation import EvalSettings, evaluate, nil_threshold_on_dev
from mel.gemel.experiment import load_experiment
from mel.io.atomic import write_json, write_jsonl
from mel.runs import files as runs
from mel.runs.checkpoints import load_projector_checkpoint, save_projector_checkpoint
from mel.runs.logs import project_logger
from mel.runs.metrics import MetricsLog, check_tracker, start_tracker
from mel.runs.processes import Processes
from utils import length_bucketed_batches

logger = project_logger("main")


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


def train(args, exp, files, tracker=None):
    model, builder, split, processes = exp.model, exp.builder, exp.splits["train"], exp.processes
    main_process = processes.is_main  # the one that writes files; with N processes all train in lockstep
    settings = EvalSettings.from_args(args)
    lengths = [builder.prompt_length(ex, d, with_target=True) for ex, d in zip(split.examples, split.demos)]
    micro_per_epoch = math.ceil(len(lengths) / args.train_bs)
    optimizer, scheduler = make_optimizer(model, args, micro_per_epoch)
    metrics = MetricsLog(files.metrics, tracker)
    config = runs.run_config(args)
    # the running loss too, so that a resumed run logs the same averages; metrics_rows: the log's rows at the save
    state = {"global_step": 0, "epoch": 0, "batch": 0, "best_acc": float("-inf"), "best_step": None,
             "loss_sum": 0.0, "loss_n": 0, "metrics_rows": 0, "finished": False}
    resumed = runs.resume(files, args, model.linear, optimizer, scheduler)
    if resumed is not None:
        state = resumed
        if main_process:
            metrics.truncate(state["metrics_rows"])  # the resumed run logs what came after the save again
        logger.info(f"Resumed from {files.state} at step {state['global_step']}")

    def save_state():
        if main_process:
            state["metrics_rows"] = metrics.rows
            runs.save_state(files.state, model.linear, optimizer, scheduler, state, config)
    log_banner(args, exp, micro_per_epoch)

    def evaluate_and_keep_best():
        dev = evaluate(exp, exp.splits["dev"], settings)
        acc = dev.accuracy
        row = {"step": state["global_step"], "epoch": state["epoch"], "dev_acc": acc, "dev_mrr": dev.summary["mrr"],
               "dev_examples_per_s": dev.summary["examples_per_s"], "time": time.time()}
        if acc >= state["best_acc"]:  # as the original: a tie keeps the later checkpoint
            state["best_acc"], state["best_step"] = acc, state["global_step"]
            if main_process:
                save_projector_checkpoint(model.linear, files.checkpoint)
                write_json(files.config, {**config, "best_dev_acc": acc, "best_step": state["global_step"]})
            logger.info(f"New best dev acc {acc:.4f} %: saved {files.checkpoint}")
            row["saved"] = files.checkpoint
        if main_process:
            metrics.append(row)
        model.train()

    total_micro = micro_per_epoch * args.train_epoch
    bar = tqdm(total=total_micro, initial=state["global_step"], desc="train", unit="step", disable=not main_process)
    optimizer_steps, save_due = 0, False
    model.train()
    for epoch in range(state["epoch"], args.train_epoch):
        state["epoch"] = epoch
        # the order depends on (seed, epoch) only, so a resumed run sees the same batches
        rng = np.random.default_rng(args.random_seed + epoch)
        batches = length_bucketed_batches(lengths, args.train_bs, shuffle=True, rng=rng)
        for b in range(state["batch"], len(batches)):
            idx = batches[b]
            # With N processes every one walks all micro-batches and computes its own (Processes.owns);
            # the loss of each is shared, so steps, logs and dev evaluations happen at the same points.
            mine = processes.owns(b, args.accum_iter)
            local_loss = None
            if mine:
                batch = builder.collate([split.examples[i] for i in idx], [split.demos[i] for i in idx],
                                        split.images[idx], training=True)
                local_loss = model(batch)
            loss = processes.value_of_owner(local_loss, model.linear.weight.device)
            check_finite(loss, state, [split.examples[i]["line"] for i in idx], files)
            if mine:
                (local_loss / args.accum_iter).backward()
            at_boundary = (b + 1) % args.accum_iter == 0 or b + 1 == len(batches)
            if at_boundary:
                processes.sum_gradients(model.linear.parameters())  # the sum one process would have accumulated
                torch.nn.utils.clip_grad_norm_(model.linear.parameters(), args.max_norm)
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)
                optimizer_steps += 1
            state["global_step"] += 1
            state["batch"] = b + 1
            state["loss_sum"], state["loss_n"] = state["loss_sum"] + loss.item(), state["loss_n"] + 1
            average = state["loss_sum"] / state["loss_n"]
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", avg=f"{average:.4f}")
            if state["global_step"] % 50 == 0 and main_process:
                metrics.append({"step": state["global_step"], "train_loss": average, "lr": scheduler.get_last_lr()[0]})
            if args.do_eval and state["global_step"] % args.do_eval_steps == 0 and state["global_step"] < total_micro:
                evaluate_and_keep_best()
                save_due = True
            # The state holds no accumulated gradients, so it is saved between optimizer steps only.
            if at_boundary and (save_due or optimizer_steps % args.save_steps == 0):
                save_state()
                save_due = False
        state["batch"] = 0
    bar.close()
    if not state["finished"]:  # the last rows and the last dev evaluation, once
        if state["loss_n"] and main_process:
            metrics.append({"step": state["global_step"], "train_loss": state["loss_sum"] / state["loss_n"],
                            "lr": scheduler.get_last_lr()[0]})
        evaluate_and_keep_best()
        state.update(epoch=args.train_epoch, finished=True)
        save_state()
    processes.barrier()  # the checkpoint is written before any process reads it
    return state, metrics


def log_banner(args, exp, micro_per_epoch):
    trainable, frozen = exp.model.parameter_counts()
    logger.info(f"\n{'=' * 60}\nGEMEL training on {args.dataset} with {args.model_name}\n"
                f"  examples: train {len(exp.splits['train'].examples)}, dev {len(exp.splits['dev'].examples)}\n"
                f"  demonstrations per example: {args.ICL_examples_num}, "
                f"visual prefix tokens: {args.visual_prefix_length}\n"
                f"  micro-batch {args.train_bs} x accumulation {args.accum_iter} = effective batch "
                f"{args.train_bs * args.accum_iter}{data_parallel_note(args, exp)}\n"
                f"  epochs {args.train_epoch}: {micro_per_epoch * args.train_epoch} micro-steps, "
                f"{math.ceil(micro_per_epoch / args.accum_iter) * args.train_epoch} optimizer steps, lr {args.lr}"
                f"{' (legacy fp16 optimizer)' if args.legacy_optimizer else ''}\n"
                f"  parameters: trainable {trainable:,} ({100.0 * trainable / (trainable + frozen):.3f}%), "
                f"frozen {frozen:,}\n{'=' * 60}")


def check_processes(args, processes):
    """With N processes, micro-batch p of each accumulation window goes to process p mod N: N may not exceed
    --accum_iter, or processes would only wait."""
    n = processes.size
    if n > args.accum_iter and args.train_epoch > 0:
        raise DataError(f"{n} processes but --accum_iter {args.accum_iter}: each process computes whole micro-batches "
                        f"of an accumulation window, so at most --accum_iter processes can train (a multiple of the "
                        f"number of processes keeps them equally busy). Raise --accum_iter (a smaller --train_bs "
                        f"keeps the effective batch --train_bs x --accum_iter) or start at most {args.accum_iter} "
                        f"processes")


def data_parallel_note(args, exp):
    n = exp.processes.size
    if n == 1:
        return ""
    note = f"\n  data parallel: {n} processes, micro-batch p of each window computed by process p mod {n}"
    config = exp.model.lm.config
    dropout = {k: getattr(config, k) for k in ("dropout", "attention_dropout", "activation_dropout", "hidden_dropout",
                                                "resid_pdrop", "embd_pdrop", "attn_pdrop", "hidden_dropout_prob",
                                                "attention_probs_dropout_prob")
               if isinstance(getattr(config, k, None), float) and getattr(config, k) > 0}
    if dropout:
        note += (f"\n  note: the LM trains with dropout ({', '.join(f'{k} {v}' for k, v in dropout.items())}); each "
                 f"process draws its own masks, so the run equals a one-process run in distribution, not bit for bit")
    return note


def check_finite(loss, state, lines, files):
    """Stop at a non-finite loss: one more optimizer step would make the whole projector NaN."""
    if not torch.isfinite(loss):
        raise DataError(f"training loss is {loss.item()} at step {state['global_step'] + 1} (train.json lines "
                        f"{', '.join(map(str, lines))}): the projector would become NaN. The best checkpoint so far "
                        f"({files.checkpoint}, if any) is kept; try a lower --lr, or --dtype float32/bfloat16 if the "
                        f"LM runs in float16")


def run(args):
    with Processes.start(args.device) as processes:  # N processes under accelerate launch / torchrun
        files = runs.RunFiles.of(args)
        check_processes(args, processes)
        if args.nil_threshold == "checkpoint":
            raise DataError("--nil_threshold checkpoint is for infe.py and link.py; main.py takes a number or dev")
        if args.fusion == "checkpoint":
            raise DataError("--fusion checkpoint is for infe.py; main.py chooses the weights (--fusion dev) or takes "
                            "them by hand (--fusion_weights)")
        check_tracker(args.report_to)
        lock = processes.on_main(lambda: runs.claim(files, args))  # the others wait; a refusal stops every process
        with lock or contextlib.nullcontext():  # the main process holds the run's files until it ends
            return train_and_test(args, processes, files)


def train_and_test(args, processes, files):
    tracker = None
    if processes.is_main:
        tracker = start_tracker(args.report_to, args.log_dir, runs.run_name(args), runs.run_config(args))
    set_seed(args.random_seed)
    splits = ["train", "dev"] + (["test"] if args.do_test else [])
    exp = load_experiment(args, splits, processes)
    processes.broadcast_parameters(exp.model.linear.parameters())  # one initial projector for all processes
    state, metrics = train(args, exp, files, tracker)
    result = {"best_dev_acc": state["best_acc"], "best_step": state["best_step"]}
    settings = EvalSettings.from_args(args)
    if args.nil_threshold == "dev":  # chosen with the best checkpoint, stored in its config for infe.py
        load_projector_checkpoint(exp.model.linear, files.checkpoint)
        settings = nil_threshold_on_dev(exp, settings)
        if processes.is_main:
            write_json(files.config, {**runs.checkpoint_config(files.checkpoint),
                                      "chosen_nil_threshold": settings.nil_threshold})
        result["nil_threshold"] = settings.nil_threshold
    if args.do_test:
        load_projector_checkpoint(exp.model.linear, files.checkpoint)
        logger.info(f"Testing the best checkpoint {files.checkpoint}")
        test = evaluate(exp, exp.splits["test"], settings)
        if processes.is_main:
            write_jsonl(files.test_predictions, test.records)
            metrics.append({"step": state["global_step"], "test_acc": test.accuracy,
                            **{f"test_{k}": v for k, v in test.summary.items() if k != "accuracy"},
                            "checkpoint": files.checkpoint})
        result["test_acc"] = test.accuracy
    if runs.fusion_requested(args):
        result.update(fuse(args, exp, settings, files, state, metrics))
    metrics.close()
    logger.info(json.dumps(result))
    return result


def fuse(args, exp, settings, files, state, metrics):
    """--fusion dev / --fusion_weights: the fused linker's weights (chosen on dev with the best checkpoint) stored in
    its config, and its test ranking written beside the test predictions."""
    load_projector_checkpoint(exp.model.linear, files.checkpoint)
    device = next(exp.model.linear.parameters()).device
    chosen, ranker, dev = fusion.fusion_for(args, exp, settings, files.checkpoint, device)
    if exp.processes.is_main:
        write_json(files.config, {**runs.checkpoint_config(files.checkpoint),
                                  fusion.STORED: fusion.stored(chosen, ranker, dev)})
    result = {"fusion": chosen.as_dict()}
    if args.do_test:
        records, summary = fusion.evaluate_fused(exp, "test", chosen, ranker, settings, device)
        if exp.processes.is_main:
            write_jsonl(files.fused_test_predictions, records)
            metrics.append({"step": state["global_step"], "test_fused": summary, "checkpoint": files.checkpoint})
        result["test_fused_acc"] = summary["accuracy"]
    return result


def main(argv=None):
    return params.run_script("train", {"gemel": run, **{m: train_ranker for m in params.RANKERS}}, argv)


if __name__ == "__main__":
    main()
