"""Benchmark: DRIN's training and scoring samples/s and peak memory, on features of WikiDiverse's shape.

The features are random (speed does not depend on their values) at the original's widths: 768-d text (BERT-base),
2048-d images (ResNet-152 pooler), 512-d image-text space (CLIP ViT-B/32), 10 candidates plus the original's gold
slot, d = 768, two GCN layers. Measured in this one process:
  * training samples/s: mel.drin.run's loop (make_batch gathers every slot of a batch of 64 from the entity table, one
    forward, triplet loss, Adam step);
  * scoring samples/s: batched (--eval_bs mentions per forward) against one mention per forward (the per-example
    way); both must give the same scores;
  * peak memory a training batch and a scoring batch add (CPU: VmHWM - VmRSS around the batch, as bench/pipeline.py;
    CUDA: max_memory_allocated).

  python bench/drin_bench.py              # 4,096 training mentions, 2,048 scored, 20,000 entities
  python bench/drin_bench.py --quick      # CI: small sizes, < 20 s

Prints a table and writes JSON to bench/results/drin.json (or --out).
"""
import argparse
import os
import platform
import sys
import time

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.append(os.path.join(REPO, "bench"))  # rss.py; the repository root stays first

from mel.drin.data import DrinSplit, EntityTable, make_batch  # noqa: E402
from mel.drin.model import DRIN, released_triplet_loss  # noqa: E402
from mel.io.atomic import write_json  # noqa: E402
from rss import peak_rss_since_reset, reset_peak_rss  # noqa: E402

DIM_TEXT, DIM_IMAGE, DIM_JOINT, CANDIDATES = 768, 2048, 512, 10


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes for CI")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--batch_size", type=int, default=64)
    p.add_argument("--eval_bs", type=int, default=256)
    p.add_argument("--repeats", type=int, default=3, help="timed passes; the best is kept")
    p.add_argument("--out", default=os.path.join(REPO, "bench", "results", "drin.json"))
    return p.parse_args(argv)


def synthetic(num_mentions, num_entities, gold_slot=True, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *shape: torch.randn(*shape, generator=g)  # noqa: E731
    entities = EntityTable(names=[f"e{i}" for i in range(num_entities)], row={}, text=r(num_entities, DIM_TEXT),
                           text_edge=r(num_entities, DIM_TEXT), image=r(num_entities, DIM_IMAGE),
                           text_joint=r(num_entities, DIM_JOINT), image_joint=r(num_entities, DIM_JOINT),
                           objects=r(num_entities, 1, DIM_IMAGE), object_scores=torch.rand(num_entities, 1,
                                                                                           generator=g))
    slots = torch.randint(0, num_entities, (num_mentions, CANDIDATES + gold_slot), generator=g)
    split = DrinSplit("bench", [{}] * num_mentions, r(num_mentions, DIM_TEXT), r(num_mentions, 1, DIM_IMAGE),
                      r(num_mentions, DIM_JOINT), r(num_mentions, DIM_JOINT), r(num_mentions, 3, DIM_IMAGE),
                      torch.rand(num_mentions, 3, generator=g), slots,
                      torch.randint(0, CANDIDATES, (num_mentions,), generator=g), CANDIDATES, entities)
    return entities, split


def train_pass(model, optimizer, split, entities, batch_size, device):
    model.train()
    for start in range(0, len(split.examples), batch_size):
        idx = torch.arange(start, min(start + batch_size, len(split.examples)))
        batch = make_batch(split, entities, idx).to(device)
        loss = released_triplet_loss(model(batch)[:, :split.scored], split.gold[idx].to(device),
                                     batch.mask[:, :split.scored])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@torch.no_grad()
def score_pass(model, split, entities, batch_size, device):
    model.eval()
    return torch.cat([model(make_batch(split, entities, torch.arange(i, min(i + batch_size, len(split.examples))))
                            .to(device)).cpu() for i in range(0, len(split.examples), batch_size)])


def best_time(fn, repeats, device):
    best = float("inf")
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return best


def peak_added_mb(fn, device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        base = torch.cuda.memory_allocated(device)
        fn()
        torch.cuda.synchronize(device)
        return (torch.cuda.max_memory_allocated(device) - base) / 2**20
    base = reset_peak_rss()
    fn()
    return peak_rss_since_reset() - base


def main(argv=None):
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    n_train, n_eval, n_entities = (256, 128, 2000) if args.quick else (4096, 2048, 20000)
    entities, train_split = synthetic(n_train, n_entities)
    _, eval_split = synthetic(n_eval, n_entities, seed=1)
    torch.manual_seed(0)
    model = DRIN(DIM_TEXT, DIM_IMAGE).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    per_example = eval_split
    if not args.quick:  # one mention per forward is slow: time it on the first 256 mentions
        per_example = DrinSplit(**{**vars(eval_split), "examples": eval_split.examples[:256]})
    train_pass(model, optimizer, train_split, entities, args.batch_size, device)  # warm-up
    score_pass(model, eval_split, entities, args.eval_bs, device)
    t_train = best_time(lambda: train_pass(model, optimizer, train_split, entities, args.batch_size, device),
                        args.repeats, device)
    t_batched = best_time(lambda: score_pass(model, eval_split, entities, args.eval_bs, device), args.repeats, device)
    t_single = best_time(lambda: score_pass(model, per_example, entities, 1, device), 1, device)
    batched = score_pass(model, per_example, entities, args.eval_bs, device)
    single = score_pass(model, per_example, entities, 1, device)
    small = DrinSplit(**{**vars(train_split), "examples": train_split.examples[:args.batch_size]})
    small_eval = DrinSplit(**{**vars(eval_split), "examples": eval_split.examples[:args.eval_bs]})
    result = {
        "command": " ".join(["python", "bench/drin_bench.py"] + (argv if argv is not None else sys.argv[1:])),
        "device": str(device), "cpu": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
        "parameters": sum(p.numel() for p in model.parameters()),
        "shapes": {"text": DIM_TEXT, "image": DIM_IMAGE, "joint": DIM_JOINT, "slots": CANDIDATES + 1, "hidden": 768,
                   "layers": 2, "entities": n_entities},
        "train": {"mentions": n_train, "batch_size": args.batch_size, "seconds": t_train,
                  "samples_per_s": n_train / t_train},
        "score": {"mentions": n_eval, "eval_bs": args.eval_bs, "batched_samples_per_s": n_eval / t_batched,
                  "one_per_forward_samples_per_s": len(per_example.examples) / t_single,
                  "speedup": (n_eval / t_batched) / (len(per_example.examples) / t_single),
                  "max_abs_diff": float((batched - single).abs().max())},
        "memory_mb": {"train_batch": peak_added_mb(lambda: train_pass(model, optimizer, small, entities,
                                                                      args.batch_size, device), device),
                      "score_batch": peak_added_mb(lambda: score_pass(model, small_eval, entities, args.eval_bs,
                                                                      device), device)},
    }
    write_json(args.out, result)
    print(f"DRIN ({result['parameters']:,} parameters, {CANDIDATES + 1} slots, {device}, "
          f"{result['torch_threads']} thread(s))\n"
          f"  train   {result['train']['samples_per_s']:9.1f} mentions/s  (batch {args.batch_size})\n"
          f"  score   {result['score']['batched_samples_per_s']:9.1f} mentions/s batched ({args.eval_bs}), "
          f"{result['score']['one_per_forward_samples_per_s']:.1f} one per forward: "
          f"{result['score']['speedup']:.1f}x, max |diff| {result['score']['max_abs_diff']:.1e}\n"
          f"  memory  +{result['memory_mb']['train_batch']:.0f} MB per training batch, "
          f"+{result['memory_mb']['score_batch']:.0f} MB per scoring batch\n"
          f"Wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
