"""`python main.py --method drin` (train) and `python infe.py --method drin` (evaluate).

Training follows the original (train.py): Adam at 1e-3, batch 64, the triplet loss with margin 0.25, 30 epochs,
Adam's state reset every 10 epochs (the original built a new trainer per 10-epoch round). Unlike the original,
the model with the best dev Hits@1 is kept (--no-best_dev keeps the last one, as the original reported), runs are
checkpointed and resumable, and evaluation also reports MRR and per-mention ranked candidates.
"""
import argparse
import os
import time

import torch
from tqdm import tqdm
from transformers import set_seed

import fileio
import runs
import safeload
from drin.data import EntityTable, load_split, make_batch
from drin.model import DRIN, EDGES, gold_ranks, triplet_loss
from loading import pick_device
from params import add_switches
from utils import DataError
from utils import load_split as read_split

HITS = (1, 3, 5, 10, 20, 50)
ARCHITECTURE = ("hidden", "num_layers", "edges", "edge_type", "vector_edges")


def build_parser(description, evaluate):
    fmt = argparse.ArgumentDefaultsHelpFormatter
    p = argparse.ArgumentParser(description=description, formatter_class=fmt)
    p.add_argument("--method", choices=("gemel", "drin"), default="drin", help="the linker (this parser: drin)")
    g = p.add_argument_group("data")
    g.add_argument("--dataset", default="demo", help="folder name under --data_dir")
    g.add_argument("--data_dir", default="./data/", help="folder holding one sub-folder per dataset")
    g.add_argument("--log_dir", default="./log/", help="metrics log (JSONL) goes here")
    g.add_argument("--ckpt_dir", default="./checkpoint/", help="checkpoints, their config and predictions go here")
    g.add_argument("--max_candidates", type=int, default=None, help="use only the first N candidates of each list")
    g = p.add_argument_group("model")
    g.add_argument("--hidden", type=int, default=768, help="vertex width d (the original: 768)")
    g.add_argument("--num_layers", type=int, default=2, help="GCN layers")
    g.add_argument("--edges", default=",".join(EDGES),
                   help="edges switched on (the original's gcn_edge_enabled); `tt` alone cuts the image vertices off")
    g.add_argument("--edge_type", default="dynamic", choices=("dynamic", "static"),
                   help="dynamic: edges recomputed at every layer; static: the initial similarities throughout")
    add_switches(g, [("vector_edges", False, "vector edges (the original's gcn_edge_feature=vector)"),
                     ("gold_slot", False, "the original's candidate handling: the gold entity appended to every "
                                          "list as an extra slot, left out of the loss and the metrics but seen by "
                                          "the mention vertices (a leak at test time); default: leak-free")])
    g = p.add_argument_group("training")
    g.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    g.add_argument("--batch_size", type=int, default=64, help="mentions per batch")
    g.add_argument("--train_epoch", type=int, default=30, help="epochs")
    g.add_argument("--margin", type=float, default=0.25, help="triplet loss margin")
    g.add_argument("--reset_optimizer_every", type=int, default=10,
                   help="reset Adam's state every N epochs, as the original's 10-epoch rounds did (0: never)")
    g.add_argument("--random_seed", type=int, default=0, help="seed of torch and the data order (the original: 0)")
    g.add_argument("--device", default=None, help="cuda, cpu, ... (default: cuda if available)")
    add_switches(g, [("best_dev", True, "keep the model with the best dev Hits@1 (the original kept the last)"),
                     ("resume", False, "continue the run in --ckpt_dir from its last saved epoch"),
                     ("overwrite", False, "replace an earlier run's (or evaluation's) files")])
    g = p.add_argument_group("evaluation")
    g.add_argument("--eval_bs", type=int, default=256, help="mentions per scoring batch")
    g.add_argument("--hits", default=",".join(map(str, HITS)), help="k of Hits@k")
    if evaluate:
        g.add_argument("--split", default="test", choices=("train", "dev", "test"), help="split to evaluate")
        g.add_argument("--best_ckpt", default=None, help="checkpoint (default: the one main.py writes for these flags)")
        g.add_argument("--predictions_file", default=None, help="per-mention JSONL (default: beside the checkpoint)")
    return p


def parse_args(argv, description, evaluate=False):
    parser = build_parser(description, evaluate)
    args = parser.parse_args(argv)
    args.dataset_dir = os.path.join(args.data_dir, args.dataset)
    if not os.path.isdir(args.dataset_dir):
        parser.error(f"dataset folder {args.dataset_dir!r} does not exist")
    chosen = [e.strip() for e in args.edges.split(",") if e.strip()]
    if not chosen or set(chosen) - set(EDGES):
        parser.error(f"--edges takes a comma-separated subset of {','.join(EDGES)}, got {args.edges!r}")
    args.edges = ",".join(e for e in EDGES if e in chosen)  # one spelling per set: it names the run
    try:
        args.hits = sorted({int(k) for k in args.hits.split(",")})
    except ValueError:
        parser.error("--hits takes comma-separated integers, e.g. 1,3,5")
    positive = ["hidden", "num_layers", "batch_size", "eval_bs", "lr"] + ["max_candidates"] * (args.max_candidates
                                                                                               is not None)
    for name in positive:
        if getattr(args, name) <= 0:
            parser.error(f"--{name} must be positive, got {getattr(args, name)}")
    if args.train_epoch < 0 or args.reset_optimizer_every < 0:
        parser.error("--train_epoch and --reset_optimizer_every must be >= 0")
    if args.resume and args.overwrite:
        parser.error("--resume continues a run and --overwrite replaces it: give one of them")
    return args


def run_files(args):
    stem = (f"drin_{args.dataset}_{args.edges.replace(',', '-')}_{args.edge_type}"
            f"{'_vector' if args.vector_edges else ''}{'_goldslot' if args.gold_slot else ''}"
            f"{'' if args.best_dev else '_last'}")
    base = os.path.join(args.ckpt_dir, stem)
    return runs.RunFiles(checkpoint=base + ".pt", config=base + ".json", state=base + ".train_state.pt",
                         test_predictions=base + ".test.predictions.jsonl",
                         metrics=os.path.join(args.log_dir, f"{stem}.metrics.jsonl"))


# ----------------------------------------------------------------------------- scoring and metrics

@torch.no_grad()
def score(model, split, entities, batch_size, device):
    """(N, S) scores of every slot of every mention, batch by batch."""
    model.eval()
    out = [model(make_batch(split, entities, range(i, min(i + batch_size, len(split.examples)))).to(device)).cpu()
           for i in range(0, len(split.examples), batch_size)]
    return torch.cat(out) if out else torch.zeros(0, split.slots.shape[1])


def evaluate(model, split, entities, args, device):
    """(summary, per-mention records): Hits@k and MRR over all mentions (a gold missing from the list is a miss),
    and over the mentions whose gold is listed (the original's WikiDiverse correction)."""
    start = time.time()
    scores = score(model, split, entities, args.eval_bs, device)[:, :split.scored]
    mask = split.slots[:, :split.scored] >= 0
    scores = scores.masked_fill(~mask, float("-inf"))
    ranks = gold_ranks(scores, split.gold, mask, ties="hit" if args.gold_slot else "miss")
    n, listed = len(ranks), int((ranks > 0).sum())
    summary = {"split": split.name, "examples": n, "candidates": split.scored,
               "candidate_handling": "gold slot (original)" if args.gold_slot else "leak-free",
               "gold_listed": 100.0 * listed / max(n, 1)}
    for k in args.hits:
        hits = int(((ranks > 0) & (ranks <= k)).sum())
        summary[f"hits@{k}"] = 100.0 * hits / max(n, 1)
        summary[f"hits@{k}_listed"] = 100.0 * hits / max(listed, 1)
    summary["mrr"] = float(torch.where(ranks > 0, 1.0 / ranks.clamp(min=1), torch.zeros(())).mean()) if n else 0.0
    summary["examples_per_s"] = n / max(time.time() - start, 1e-9)
    order = torch.argsort(scores, dim=1, descending=True, stable=True)
    records = []
    for i, ex in enumerate(split.examples):
        ranked = [{"name": entities.names[int(split.slots[i, j])], "score": round(float(scores[i, j]), 6)}
                  for j in order[i].tolist() if mask[i, j]]
        records.append({"line": ex["line"], "mention": ex["mention"], "target": ex["target"],
                        "prediction": ranked[0]["name"] if ranked else None,
                        "gold_rank": int(ranks[i]) or None, "candidates": ranked})
    return summary, records


def print_summary(summary):
    hits = "  ".join(f"H@{k.split('@')[1]} {v:.2f}" for k, v in summary.items()  # k past the list length = recall
                     if k.startswith("hits@") and not k.endswith("_listed") and int(k[5:]) <= summary["candidates"])
    print(f"{summary['split']}: {summary['examples']} mentions, {summary['candidate_handling']}: {hits}  "
          f"MRR {summary['mrr']:.4f}  (gold listed for {summary['gold_listed']:.1f} %)")


# ----------------------------------------------------------------------------- training

def load_data(args, splits, training):
    entities = EntityTable.load(args.dataset_dir, args.dataset)
    data = {}
    for split in splits:
        examples = read_split(os.path.join(args.dataset_dir, f"{split}.json"))
        if not examples:
            raise DataError(f"{args.dataset_dir}/{split}.json: no non-NIL examples")
        data[split] = load_split(args.dataset_dir, args.dataset, split, examples, entities, args.gold_slot,
                                 training and split == "train", args.max_candidates)
    return entities, data


def make_model(entities, config):
    return DRIN(entities.text.shape[1], entities.image.shape[-1], dim=config["hidden"],
                num_layers=config["num_layers"], edges=config["edges"].split(","), edge_type=config["edge_type"],
                vector_edges=config["vector_edges"])


def train(args):
    files = run_files(args)
    runs.claim(files, args)
    set_seed(args.random_seed)
    device = pick_device(args.device)
    entities, data = load_data(args, ["train", "dev", "test"], training=True)
    config = runs.run_config(args)
    model = make_model(entities, config).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
    progress = {"epoch": 0, "best": float("-inf"), "best_epoch": None}
    metrics = runs.MetricsLog(files.metrics)
    if args.resume and os.path.exists(files.state):
        saved = runs.load_state(files.state)
        runs.check_resume(saved["config"], args, files.state)
        model.load_state_dict(saved["linear"])  # runs.save_state's key for the trained parameters
        optimizer.load_state_dict(saved["optimizer"])
        progress = saved["progress"]
        torch.set_rng_state(saved["torch_rng"])
        metrics.keep_until(progress["epoch"])
        print(f"Resumed from {files.state} after epoch {progress['epoch']}")
    train_split = data["train"]
    params = sum(p.numel() for p in model.parameters())
    print(f"DRIN on {args.dataset}: {len(train_split.examples)} training mentions x {train_split.slots.shape[1]} "
          f"slots ({'gold slot, as the original' if args.gold_slot else 'leak-free'}), edges {args.edges} "
          f"({args.edge_type}), {params:,} parameters, {args.train_epoch} epochs of batch {args.batch_size}")
    for epoch in range(progress["epoch"], args.train_epoch):
        if args.reset_optimizer_every and epoch and epoch % args.reset_optimizer_every == 0:
            optimizer = torch.optim.Adam(model.parameters(), lr=args.lr)
        model.train()
        order = torch.randperm(len(train_split.examples), generator=torch.Generator().manual_seed(args.random_seed
                                                                                                   + epoch))
        total, count = 0.0, 0
        for start in tqdm(range(0, len(order), args.batch_size), desc=f"epoch {epoch + 1}", leave=False):
            idx = order[start:start + args.batch_size]
            batch = make_batch(train_split, entities, idx).to(device)
            scores = model(batch)[:, :train_split.scored]
            loss = triplet_loss(scores, train_split.gold[idx].to(device), batch.mask[:, :train_split.scored],
                                args.margin)
            if not torch.isfinite(loss):
                raise DataError(f"training loss is {loss.item()} in epoch {epoch + 1}; check the feature files for "
                                f"extreme values, or lower --lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, count = total + loss.item() * len(idx), count + len(idx)
        dev, _ = evaluate(model, data["dev"], entities, args, device)
        row = {"step": epoch + 1, "epoch": epoch + 1, "train_loss": total / max(count, 1),
               "dev_hits@1": dev["hits@1"], "dev_mrr": dev["mrr"]}
        better = dev["hits@1"] >= progress["best"] or not args.best_dev
        progress.update(epoch=epoch + 1)
        if better:
            progress.update(best=dev["hits@1"], best_epoch=epoch + 1)
            save_checkpoint(model, config, files, progress)
            row["saved"] = files.checkpoint
        metrics.append(row)
        print(f"epoch {epoch + 1}: loss {row['train_loss']:.4f}, dev Hits@1 {dev['hits@1']:.2f} MRR {dev['mrr']:.4f}"
              f"{' (saved)' if better else ''}")
        runs.save_state(files.state, model, optimizer, None, progress, config)
    if args.train_epoch == 0 or progress["best_epoch"] is None:
        save_checkpoint(model, config, files, progress)
    load_checkpoint(model, files.checkpoint)
    test, records = evaluate(model, data["test"], entities, args, device)
    fileio.write_jsonl(files.test_predictions, records)
    metrics.append({"step": progress["epoch"], "test": test, "checkpoint": files.checkpoint})
    metrics.close()
    if progress["best_epoch"] is not None:
        print(f"Best dev Hits@1 {progress['best']:.2f} at epoch {progress['best_epoch']}; testing {files.checkpoint}")
    print_summary(test)
    return test


def save_checkpoint(model, config, files, progress):
    architecture = {k: config[k] for k in ARCHITECTURE}
    fileio.torch_save({"state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                       "architecture": architecture}, files.checkpoint)
    evaluated = progress["best_epoch"] is not None  # --train_epoch 0: no dev evaluation yet
    fileio.write_json(files.config, {**config, "best_dev_hits@1": progress["best"] if evaluated else None,
                                     "best_epoch": progress["best_epoch"]})


def read_checkpoint(path):
    saved = safeload.torch_load(path, "DRIN checkpoint", "Train one with `python main.py --method drin`.")
    if not isinstance(saved, dict) or set(saved) != {"state_dict", "architecture"} \
            or set(saved["architecture"]) != set(ARCHITECTURE):
        raise DataError(f"{path}: not a DRIN checkpoint of this version (expected state_dict and architecture)")
    return saved


def load_checkpoint(model, path, saved=None):
    saved = saved or read_checkpoint(path)
    try:
        model.load_state_dict(saved["state_dict"])
    except RuntimeError as error:
        raise DataError(f"{path}: does not fit these features ({str(error).splitlines()[0]}); evaluate with the "
                        f"feature files it was trained on") from None


# ----------------------------------------------------------------------------- evaluation script

def evaluate_checkpoint(args):
    ckpt = runs.resolve_checkpoint(args.best_ckpt, args.ckpt_dir, run_files(args).checkpoint)
    if not os.path.exists(ckpt):
        raise DataError(f"{ckpt}: checkpoint not found; train one with `python main.py --method drin` (same flags) "
                        f"or pass --best_ckpt")
    saved = read_checkpoint(ckpt)
    handling = "goldslot" if args.gold_slot else "leakfree"
    out = args.predictions_file or os.path.splitext(ckpt)[0] + f".infe.{args.split}.{handling}.predictions.jsonl"
    summary_file = runs.summary_path(out)
    runs.check_predictions_output(out, args.overwrite)
    device = pick_device(args.device)
    entities, data = load_data(args, [args.split], training=False)
    model = make_model(entities, saved["architecture"]).to(device)
    load_checkpoint(model, ckpt, saved)
    summary, records = evaluate(model, data[args.split], entities, args, device)
    fileio.write_jsonl(out, records)
    fileio.write_json(summary_file, {"checkpoint": ckpt, **summary})
    print_summary(summary)
    print(f"Wrote {len(records)} predictions to {out} and the summary to {summary_file}")
    return summary


def train_main(argv):
    from experiment import run_script
    return run_script(train, parse_args(argv, "Train DRIN (candidate reranking with a dynamic relation graph)"))


def evaluate_main(argv):
    from experiment import run_script
    return run_script(evaluate_checkpoint, parse_args(argv, "Evaluate a DRIN checkpoint", evaluate=True))
