"""The candidate rankers' two scripts: `python main.py --method drin|ghmfc|melhi` (train_ranker) and
`python infe.py --method drin|ghmfc|melhi` (evaluate_ranker). DRIN and the two baselines its repository ships share
everything here: data, batches, training, evaluation, run files.

Training follows the original (train.py): Adam at 1e-3, batch 64, the released triplet loss with margin 0.25, 30
epochs, Adam's state reset every 10 epochs (the original built a new trainer per 10-epoch round). --protocol
original does everything else as the released code does (params.PROTOCOLS); the default leak_free keeps the model
with the best dev Hits@1 and never shows a mention its gold. Runs are checkpointed and resumable, and evaluation also
reports MRR and per-mention ranked candidates.
"""
import logging
import os
import time
from types import SimpleNamespace

import torch
from tqdm import tqdm
from transformers import set_seed

from mel.drin.baselines import GHMFC, MELHI
from mel.drin.data import DrinSplit, EntityTable
from mel.drin.model import DRIN, LOSSES, gold_ranks
from mel.drin.preprocessed import ReleasedSplit, load_wikimel_entities
from mel.errors import DataError
from mel.io.atomic import write_json, write_jsonl
from mel.io.datasets import read_split
from mel.models.loading import pick_device
from mel.runs import files as runs
from mel.runs.checkpoints import load_model_checkpoint, read_model_checkpoint, save_model_checkpoint
from mel.runs.metrics import MetricsLog, log_summary, ranking_summary

logger = logging.getLogger(__name__)

# what a checkpoint records to rebuild each model ({flag: type}); the feature widths come from the data
ARCHITECTURE = {"drin": {"hidden": int, "num_layers": int, "edges": str, "edge_type": str, "vector_edges": bool},
                "ghmfc": {}, "melhi": {}}
NAMES = {"drin": "DRIN", "ghmfc": "GHMFC", "melhi": "MEL-HI"}
# what scoring new text (or another linker's candidates) takes of a protocol: no gold exists to append
LEAK_FREE = SimpleNamespace(protocol="leak_free", mention_mean="listed")


# ----------------------------------------------------------------------------- scoring and metrics

@torch.no_grad()
def score(model, split, batch_size, device):
    """(N, S) scores of every slot of every mention, batch by batch."""
    model.eval()
    out = [model(split.batch(range(i, min(i + batch_size, len(split.examples)))).to(device)).cpu()
           for i in range(0, len(split.examples), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, split.slots.shape[1])


def evaluate_ranking(model, split, args, device):
    """(summary, per-mention records): Hits@k and MRR over all mentions (a gold missing from the list is a miss),
    and over the mentions whose gold is listed (the original's WikiDiverse correction)."""
    start = time.time()
    scores = score(model, split, args.eval_bs, device)[:, :split.scored]
    mask = split.slots[:, :split.scored] >= 0
    scores = scores.masked_fill(~mask, float("-inf"))
    ranks = gold_ranks(scores, split.gold, mask, ties=args.ties)
    summary = {"split": split.name, "examples": len(ranks), "candidates": split.scored, "protocol": args.protocol,
               **ranking_summary(ranks, args.hits), "examples_per_s": len(ranks) / max(time.time() - start, 1e-9)}
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    records = []
    for i, ex in enumerate(split.examples):
        ranked = [{"name": split.entity_name(int(split.slots[i, j])), "score": round(float(scores[i, j]), 6)}
                  for j in order[i].tolist() if mask[i, j]]
        records.append({"line": ex["line"], "mention": ex["mention"], "target": ex["target"],
                        "prediction": ranked[0]["name"] if ranked else None,
                        "gold_rank": int(ranks[i]) or None, "candidates": ranked})
    return summary, records


# ----------------------------------------------------------------------------- training

def load_data(args, splits, training):
    """{split: DrinSplit, or ReleasedSplit with --preprocess_dir}: each can gather the batches of its mentions."""
    if args.preprocess_dir:
        entities = load_wikimel_entities(args.dataset_dir) if args.dataset == "wikimel" else None
        return {split: ReleasedSplit(args.dataset_dir, args.dataset, split, args.gold_slot,
                                     training and split == "train", entities) for split in splits}
    entities = EntityTable.load(args.dataset_dir, args.dataset)
    data = {}
    for split in splits:
        examples = read_split(os.path.join(args.dataset_dir, f"{split}.json"))
        if not examples:
            raise DataError(f"{args.dataset_dir}/{split}.json: no non-NIL examples")
        data[split] = DrinSplit.load(args.dataset_dir, args.dataset, split, examples, entities, args.gold_slot,
                                     training and split == "train", args.max_candidates)
    return data


def make_model(method, dims, config, args):
    """The `method`'s model for features of widths `dims` (text, image), with the architecture `config` records; what
    the protocol decides (the mention's mean, MEL-HI's released read) comes from `args`."""
    if method == "ghmfc":
        return GHMFC(*dims)
    if method == "melhi":
        return MELHI(*dims, released=args.protocol == "original")
    return DRIN(*dims, dim=config["hidden"], num_layers=config["num_layers"], edges=config["edges"].split(","),
                edge_type=config["edge_type"], vector_edges=config["vector_edges"], mention_mean=args.mention_mean)


def ranker_config(checkpoint, flag="--fusion_ranker"):
    """The config JSON beside a ranker checkpoint given by path (`flag` names where), checked to name its method."""
    config = runs.checkpoint_config(checkpoint)
    if config.get("method") not in ARCHITECTURE:
        raise DataError(f"{flag} {checkpoint}: its config JSON names no ranker method (drin, ghmfc, melhi); give a "
                        f"checkpoint `python main.py --method drin` wrote, with its .json beside it")
    return config


def check_token_states(method, split):
    """GHMFC and MEL-HI read the sentence's token states: a dataset folder's features must hold them."""
    if method != "drin" and getattr(split, "tokens", True) is None:
        raise DataError(f"{NAMES[method]} reads each sentence's token states, which the {split.name} features of this "
                        f"dataset folder lack; rebuild them with `python prepare.py drin --token_states`")


def train_ranker(args):
    files = runs.RunFiles.of(args)
    with runs.claim(files, args):
        return _train(args, files)


def _train(args, files):
    set_seed(args.random_seed)
    device = pick_device(args.device)
    data = load_data(args, ["train", "dev", "test"], training=True)
    for split in data.values():
        check_token_states(args.method, split)
    config = runs.run_config(args)
    features = feature_record(args, data["train"])
    model = make_model(args.method, data["train"].dims, config, args).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    progress = {"epoch": 0, "best": float("-inf"), "best_epoch": None, "metrics_rows": 0}
    metrics = MetricsLog(files.metrics)
    resumed = runs.resume(files, args, model, optimizer)
    if resumed is not None:
        progress = resumed
        metrics.truncate(progress["metrics_rows"])
        logger.info(f"Resumed from {files.state} after epoch {progress['epoch']}")
    train_split = data["train"]
    params = sum(p.numel() for p in model.parameters())
    shape = f", edges {args.edges} ({args.edge_type})" if args.method == "drin" else ""
    logger.info(f"{NAMES[args.method]} on {args.dataset}: {len(train_split.examples)} training mentions x "
                f"{train_split.slots.shape[1]} slots (protocol {args.protocol}, {args.loss} loss){shape}, "
                f"{params:,} parameters, {args.train_epoch} epochs of batch {args.batch_size}")
    loss_of = LOSSES[args.loss]
    for epoch in range(progress["epoch"], args.train_epoch):
        if args.reset_optimizer_every and epoch and epoch % args.reset_optimizer_every == 0:
            optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
        model.train()
        order = torch.randperm(len(train_split.examples), generator=torch.Generator().manual_seed(args.random_seed
                                                                                                   + epoch))
        total, count = 0.0, 0
        for start in tqdm(range(0, len(order), args.batch_size), desc=f"epoch {epoch + 1}", leave=False):
            idx = order[start:start + args.batch_size]
            batch = train_split.batch(idx).to(device)
            scores = model(batch)[:, :train_split.scored]
            loss = loss_of(scores, train_split.gold[idx].to(device), batch.mask[:, :train_split.scored], args.margin)
            if not torch.isfinite(loss):
                raise DataError(f"training loss is {loss.item()} in epoch {epoch + 1}; check the feature files for "
                                f"extreme values, or lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(idx), count + len(idx)
        dev, _ = evaluate_ranking(model, data["dev"], args, device)
        row = {"step": epoch + 1, "epoch": epoch + 1, "train_loss": total / max(count, 1),
               "dev_hits@1": dev["hits@1"], "dev_mrr": dev["mrr"]}
        better = dev["hits@1"] >= progress["best"] or not args.best_dev
        progress.update(epoch=epoch + 1)
        if better:
            progress.update(best=dev["hits@1"], best_epoch=epoch + 1)
            save_checkpoint_and_config(model, config, features, files, progress)
            row["saved"] = files.checkpoint
        metrics.append(row)
        logger.info(f"epoch {epoch + 1}: loss {row['train_loss']:.4f}, dev Hits@1 {dev['hits@1']:.2f} "
                    f"MRR {dev['mrr']:.4f}{' (saved)' if better else ''}")
        progress["metrics_rows"] = metrics.rows
        runs.save_state(files.state, model, optimizer, None, progress, config)
    if args.train_epoch == 0 or progress["best_epoch"] is None:
        save_checkpoint_and_config(model, config, features, files, progress)
    load_model_checkpoint(model, files.checkpoint, read_model_checkpoint(files.checkpoint, ARCHITECTURE[args.method],
                                                                         NAMES[args.method]))
    test, records = evaluate_ranking(model, data["test"], args, device)
    write_jsonl(files.test_predictions, records)
    metrics.append({"step": progress["epoch"], "test": test, "checkpoint": files.checkpoint})
    metrics.close()
    if progress["best_epoch"] is not None:
        logger.info(f"Best dev Hits@1 {progress['best']:.2f} at epoch {progress['best_epoch']}; "
                    f"testing {files.checkpoint}")
    log_summary(test)
    return test


def feature_record(args, split):
    """What computed the features the model is trained on, kept in its config: link.py computes the features of new
    mentions with the same encoders."""
    if args.preprocess_dir:
        return {"preprocess_dir": args.dataset_dir}
    return {"dataset_dir": args.dataset_dir, **(split.entities.encoders or {})}


def save_checkpoint_and_config(model, config, features, files, progress):
    save_model_checkpoint(model, {k: config[k] for k in ARCHITECTURE[config["method"]]}, files.checkpoint)
    evaluated = progress["best_epoch"] is not None  # --train_epoch 0: no dev evaluation yet
    write_json(files.config, {**config, "features": features,
                              "best_dev_hits@1": progress["best"] if evaluated else None,
                              "best_epoch": progress["best_epoch"]})


# ----------------------------------------------------------------------------- evaluation script

def evaluate_ranker(args):
    ckpt = runs.find_checkpoint(args)
    saved = read_model_checkpoint(ckpt, ARCHITECTURE[args.method], NAMES[args.method])
    out, summary_file, lock = runs.evaluation_outputs(args, ckpt)
    with lock:
        return _evaluate_into(args, ckpt, saved, out, summary_file)


def _evaluate_into(args, ckpt, saved, out, summary_file):
    device = pick_device(args.device)
    data = load_data(args, [args.split], training=False)
    check_token_states(args.method, data[args.split])
    model = make_model(args.method, data[args.split].dims, saved["architecture"], args).to(device)
    load_model_checkpoint(model, ckpt, saved)
    summary, records = evaluate_ranking(model, data[args.split], args, device)
    write_jsonl(out, records)
    write_json(summary_file, {"checkpoint": ckpt, **summary})
    log_summary(summary)
    logger.info(f"Wrote {len(records)} predictions to {out} and the summary to {summary_file}")
    return summary
