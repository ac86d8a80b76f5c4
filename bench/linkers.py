"""The linkers side by side on one dataset's candidate lists: each method under each protocol, over several seeds.

For every (method, protocol, seed) it runs the scripts as a user would, in a fresh process, into a temporary
--ckpt_dir (or one under --keep), and reads the test and dev figures they write:
  * the candidate rankers (drin, ghmfc, melhi): `python main.py --method M --protocol P --random_seed S`;
  * GEMEL: `python main.py --random_seed S`, then `python infe.py --use_candidates` (leak_free) or
    `python infe.py --use_candidates --candidates_with_gold` (original: the gold put into every list, as the
    rankers' original protocol does);
  * the retriever: `python infe.py --method retriever` once per split (nothing is trained; its lists' own order,
    leak_free);
  * the fused linkers, from the same GEMEL checkpoint: `python infe.py --fusion dev` (GEMEL + retriever, "fused") and
    with `--fusion_ranker` a DRIN trained with the same seed ("fused_drin"), leak_free; their dev figures are those
    of the weights chosen on dev.
Prints test Hits@1/3/5 and MRR as mean ± standard deviation over the seeds, with the command of each row, and writes
JSON to bench/results/linkers.json (or --out) after every seed, "complete" once all are done.

    python bench/linkers.py --methods drin --seeds 0,1,2,3,4                 # the demo (after prepare.py drin)
    python bench/linkers.py --methods retriever,gemel,drin --seeds 0,1,2 -- --dataset demo
    python bench/linkers.py --render a.json b.json           # the rows of earlier runs as one Markdown table
    python bench/linkers.py --render a.json b.json --dev     # the leak-free rows, dev beside test
"""
import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from mel.errors import DataError  # noqa: E402
from mel.io.atomic import write_json  # noqa: E402
from mel.runs.lock import RunLock  # noqa: E402

RANKERS = ("drin", "ghmfc", "melhi")
NAMES = {"retriever": "retriever", "gemel": "GEMEL", "drin": "DRIN", "ghmfc": "GHMFC", "melhi": "MEL-HI",
         "fused": "GEMEL + retriever, fused", "fused_drin": "GEMEL + retriever + DRIN, fused"}
PROTOCOLS = ("leak_free", "original")
SHOWN = ("hits@1", "hits@3", "hits@5", "mrr")
DEV_SHOWN = ("hits@1", "mrr")  # every linker reports these on dev (the fused ones: where their weights were chosen)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--methods", default=None,
                   help=f"comma-separated: retriever, gemel, fused, fused_drin and/or {', '.join(RANKERS)} (default "
                        "drin; with --render, the rows shown and their order, default all)")
    p.add_argument("--seeds", default="0,1,2,3,4", help="comma-separated --random_seed values")
    p.add_argument("--out", default=os.path.join(REPO, "bench", "results", "linkers.json"))
    p.add_argument("--render", nargs="+", default=None, metavar="JSON",
                   help="print the rows of these earlier outputs as one Markdown table, running nothing")
    p.add_argument("--dev", action="store_true",
                   help="with --render: the leak-free rows with dev figures beside the test ones")
    p.add_argument("--keep", default=None, metavar="DIR",
                   help="keep each seed's checkpoints, predictions and logs under DIR/<methods>-seed<S> instead of "
                        "a temporary folder; run again, it continues each folder where it stopped")
    p.add_argument("flags", nargs="*", help="flags for every script (after --), e.g. --dataset demo")
    return p.parse_args(argv)


def script(args, folder):
    """Run `python <args>` writing under `folder` (an error stops the benchmark), unless the folder's `steps.jsonl`
    records that it finished there: a kept folder continues where a stopped benchmark left it."""
    steps = os.path.join(folder, "steps.jsonl")
    step = json.dumps([arg.replace(folder, "{folder}") for arg in args])
    if os.path.exists(steps) and step in open(steps, encoding="utf-8").read().splitlines():
        return
    # --overwrite: what a step finds there is its own unfinished attempt (a live run's files stay refused: locked)
    command = [sys.executable, *args, "--ckpt_dir", os.path.join(folder, "ckpt"), "--log_dir",
               os.path.join(folder, "log"), "--overwrite"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    with open(steps, "a", encoding="utf-8") as out:
        out.write(step + "\n")


def metrics_rows(folder, prefix=""):
    """The rows of the one metrics log under folder/log whose name starts with `prefix`."""
    [log] = [name for name in os.listdir(os.path.join(folder, "log"))
             if name.startswith(prefix) and name.endswith(".metrics.jsonl")]
    return [json.loads(line) for line in open(os.path.join(folder, "log", log), encoding="utf-8")]


def tested(rows):
    """A ranker run's test summary from its metrics log, with the dev figures of the checkpoint it tested under
    "dev"."""
    saved = [row for row in rows if "saved" in row]
    dev = {"dev": {"hits@1": saved[-1]["dev_hits@1"], "mrr": saved[-1]["dev_mrr"]}} if saved else {}
    return {**rows[-1]["test"], **dev}


def ranker_summary(method, protocol, seed, flags, folder):
    script(["main.py", "--method", method, "--protocol", protocol, "--random_seed", str(seed), *flags], folder)
    return tested(metrics_rows(folder))


GEMEL_FAMILY = ("gemel", "fused", "fused_drin")  # the linkers computed from one trained GEMEL checkpoint


def gemel_summaries(seed, flags, folder, methods):
    """{(method, protocol): test summary} of one trained GEMEL checkpoint among the same candidates: GEMEL's own
    under both protocols ("gemel"), fused with the retriever ("fused") and also with a DRIN trained with the same
    seed ("fused_drin"; that DRIN's own figures are a "drin" row), weights chosen on dev. Each summary holds its dev
    figures under "dev" (the fused ones: those the weights were chosen on)."""
    script(["main.py", "--random_seed", str(seed), "--no-do_test", *flags], folder)

    def infe(name, *extra):
        predictions = os.path.join(folder, f"{name}.jsonl")
        script(["infe.py", "--random_seed", str(seed), *extra, "--predictions_file", predictions, *flags], folder)
        summary = json.load(open(os.path.splitext(predictions)[0] + ".summary.json", encoding="utf-8"))
        return {**summary, "hits@1": summary["accuracy"]}

    def fused(name, *extra):
        summary = infe(name, "--fusion", "dev", *extra)
        return {**summary, "dev": summary["fusion_dev"]}

    out = {}
    if "gemel" in methods:
        dev = infe("leak_free_dev", "--use_candidates", "--split", "dev")
        out[("gemel", "leak_free")] = {**infe("leak_free", "--use_candidates"), "dev": dev_figures(dev)}
        # the original protocol puts the gold into every list: where every list holds it, nothing changes
        out[("gemel", "original")] = out[("gemel", "leak_free")] if golds_listed(flags) else \
            infe("original", "--use_candidates", "--candidates_with_gold")
    if "fused" in methods:
        out[("fused", "leak_free")] = fused("fused")
    if "fused_drin" in methods:
        script(["main.py", "--method", "drin", "--random_seed", str(seed), *data_flags(flags)], folder)
        rows = metrics_rows(folder, "drin_")
        out[("drin", "leak_free")] = tested(rows)
        out[("fused_drin", "leak_free")] = fused("fused_drin", "--fusion_ranker", rows[-1]["checkpoint"])
    return out


def golds_listed(flags):
    """Whether every test mention's gold is in its candidate list (then the gold slot adds nothing)."""
    from mel.io.datasets import read_split
    from mel.retrieval.candidates import candidates_path, read_candidates

    named = dict(zip(data_flags(flags)[::2], data_flags(flags)[1::2]))
    folder = os.path.join(REPO, named.get("--data_dir", "data"), named.get("--dataset", "demo"))
    examples = read_split(os.path.join(folder, "test.json"))
    lists = read_candidates(candidates_path(folder, "test"), examples)
    return all(ex["target"] in lists[ex["line"]] for ex in examples)


def data_flags(flags):
    """The flags naming the data (--dataset, --data_dir): all the retriever takes of the common ones."""
    kept = []
    for i, flag in enumerate(flags):
        if flag in ("--dataset", "--data_dir") and i + 1 < len(flags):
            kept += [flag, flags[i + 1]]
        elif flag.split("=")[0] in ("--dataset", "--data_dir"):
            kept.append(flag)
    return kept


def retriever_summary(flags, folder):
    summaries = {}
    for split in ("dev", "test"):
        predictions = os.path.join(folder, f"retriever.{split}.jsonl")
        script(["infe.py", "--method", "retriever", "--split", split, "--hits", "1,3,5", "--predictions_file",
                predictions, *data_flags(flags)], folder)
        summaries[split] = json.load(open(os.path.splitext(predictions)[0] + ".summary.json", encoding="utf-8"))
    return {**summaries["test"], "dev": dev_figures(summaries["dev"])}


def dev_figures(summary):
    return {"hits@1": summary["hits@1"], "mrr": summary["mrr"]}


def command_of(method, protocol, flags):
    joined, data = " ".join(flags), " ".join(data_flags(flags))
    if method == "fused":
        command = f"python main.py {joined}; python infe.py --fusion dev {joined}"
    elif method == "fused_drin":
        command = (f"python main.py {joined}; python main.py --method drin {data}; python infe.py --fusion dev "
                   f"--fusion_ranker checkpoint/drin_<dataset>_tt-ti-it-ii_dynamic.pt {joined}")
    elif method == "retriever":
        command = f"python infe.py --method retriever {data}"
    elif method == "gemel":
        gold = " --candidates_with_gold" if protocol == "original" else ""
        command = f"python main.py {joined}; python infe.py --use_candidates{gold} {joined}"
    else:
        command = f"python main.py --method {method} --protocol {protocol} {joined}"
    return tidy(command)


@contextlib.contextmanager
def kept_folder(folder):
    """A --keep folder, owned by this benchmark while it runs (another one started on it is refused in one line)."""
    try:
        lock = RunLock(folder, "this kept benchmark folder", "give another --keep").acquire()
    except DataError as error:
        raise SystemExit(f"error: {error}") from None
    with lock:
        if os.path.exists(folder):
            print(f"continuing {folder}: the steps its steps.jsonl records are not run again", flush=True)
        os.makedirs(folder, exist_ok=True)
        yield folder


def tidy(command):
    """A command as a user types it: single spaces, none before a ';'."""
    return " ".join(command.split()).replace(" ;", ";")


def table_rows(runs, flags):
    """One row per (method, protocol): each metric's mean, spread and values over the seeds run so far."""
    rows = []
    for (method, protocol), done in runs.items():
        row = {"method": method, "protocol": protocol, "seeds": [seed for seed, _ in done if seed is not None],
               "command": command_of(method, protocol, flags)}
        for key in SHOWN:
            row[key] = spread([s[key] for _, s in done if s.get(key) is not None])
        with_dev = [(seed, s["dev"]) for seed, s in done if s.get("dev")]
        if with_dev:
            row["dev"] = {"seeds": [seed for seed, _ in with_dev if seed is not None],
                          **{key: spread([d[key] for _, d in with_dev]) for key in DEV_SHOWN}}
        rows.append(row)
    return rows


def spread(values):
    if not values:
        return {"mean": None, "std": None, "values": []}
    return {"mean": statistics.mean(values), "std": statistics.pstdev(values), "values": values}


def merged(rows, methods=None):
    """Rows of several outputs, those of one (method, protocol) joined: their seeds and values together, a seed
    already there kept from the earlier output (the same command and seed is the same run). `methods`: only these,
    in this order."""
    out = {}
    for row in rows:
        key = (row["method"], row["protocol"])
        if methods is not None and row["method"] not in methods:
            continue
        if key not in out:
            out[key] = json.loads(json.dumps(row))
            continue
        join(out[key], row, SHOWN)
        if "dev" in row:
            join(out[key].setdefault("dev", {"seeds": [], **{name: spread([]) for name in DEV_SHOWN}}), row["dev"],
                 DEV_SHOWN)
    joined = list(out.values())
    return joined if methods is None else sorted(joined, key=lambda row: methods.index(row["method"]))


def join(joined, row, names):
    """Add the seeds of `row` that `joined` lacks, with their values (a row without seeds, one deterministic
    evaluation, adds nothing to one that has its values)."""
    new = [i for i, seed in enumerate(row["seeds"]) if seed not in joined["seeds"]]
    if not row["seeds"] and not joined[names[0]]["values"]:
        new = list(range(len(row[names[0]]["values"])))
    joined["seeds"] = joined["seeds"] + [row["seeds"][i] for i in new if row["seeds"]]
    for name in names:
        joined[name] = spread(joined[name]["values"] + [row[name]["values"][i] for i in new])


def figure(figures, key, digits):
    """"mean ± std" of one metric, or "–" where it was not measured."""
    if figures is None or figures[key]["mean"] is None:
        return "–"
    return f"{figures[key]['mean']:.{digits}f} ± {figures[key]['std']:.{digits}f}"


def markdown(rows):
    """A Markdown table of result rows: mean ± standard deviation over the seeds, and each row's command."""
    lines = ["| system | protocol | Hits@1 | Hits@3 | Hits@5 | MRR | seeds | command |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        cells = [figure(row, k, 3 if k == "mrr" else 2) for k in SHOWN]
        seeds = ",".join(map(str, row["seeds"])) or "–"
        lines.append(f"| {NAMES.get(row['method'], row['method'])} | {row['protocol']} | {' | '.join(cells)} | "
                     f"{seeds} | `{tidy(row['command'])}` |")
    return "\n".join(lines)


def markdown_dev(rows):
    """The leak-free rows with their dev figures beside the test ones (Hits@1, MRR on dev; Hits@1/5, MRR on test)."""
    lines = ["| system | dev Hits@1 | dev MRR | test Hits@1 | test Hits@5 | test MRR | seeds (dev) | command |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        if row["protocol"] != "leak_free":
            continue
        dev = row.get("dev")
        seeds = ",".join(map(str, row["seeds"])) or "–"
        if dev and dev["seeds"] != row["seeds"]:
            seeds += f" ({','.join(map(str, dev['seeds']))})"
        cells = [figure(dev, "hits@1", 2), figure(dev, "mrr", 3), figure(row, "hits@1", 2), figure(row, "hits@5", 2),
                 figure(row, "mrr", 3)]
        lines.append(f"| {NAMES.get(row['method'], row['method'])} | {' | '.join(cells)} | {seeds} | "
                     f"`{tidy(row['command'])}` |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    if args.render:
        methods = [m.strip() for m in args.methods.split(",")] if args.methods else None
        rows = merged([row for path in args.render for row in json.load(open(path, encoding="utf-8"))["rows"]],
                      methods)
        print(markdown_dev(rows) if args.dev else markdown(rows))
        return rows
    methods = [m.strip() for m in (args.methods or "drin").split(",") if m.strip()]
    seeds = [int(s) for s in args.seeds.split(",")]
    runs = {}  # (method, protocol) -> [(seed or None, test summary)]
    if args.keep:
        os.makedirs(args.keep, exist_ok=True)

    def seed_folder(name):
        return tempfile.TemporaryDirectory() if not args.keep else kept_folder(os.path.join(args.keep, name))

    start = time.time()

    def save(complete):
        """Every finished run so far: a benchmark stopped midway keeps the seeds it completed."""
        rows = table_rows(runs, args.flags)
        write_json(args.out, {"seeds": seeds, "flags": args.flags, "rows": rows, "complete": complete,
                              "seconds": time.time() - start})
        return rows

    if "retriever" in methods:  # deterministic: one evaluation
        with seed_folder("retriever") as folder:
            runs[("retriever", "leak_free")] = [(None, retriever_summary(args.flags, folder))]
        save(False)
    family = [m for m in methods if m in GEMEL_FAMILY]
    for seed in seeds if family else []:
        with seed_folder(f"{'+'.join(family)}-seed{seed}") as folder:
            for key, summary in gemel_summaries(seed, args.flags, folder, family).items():
                runs.setdefault(key, []).append((seed, summary))
        save(False)
        print(f"{'+'.join(family)} seed {seed} done ({time.time() - start:.0f} s)", flush=True)
    for method in [m for m in methods if m in RANKERS]:
        for seed in seeds:
            with seed_folder(f"{method}-seed{seed}") as folder:
                for protocol in PROTOCOLS:
                    sub = os.path.join(folder, protocol)
                    os.makedirs(sub, exist_ok=True)
                    runs.setdefault((method, protocol), []).append(
                        (seed, ranker_summary(method, protocol, seed, args.flags, sub)))
            save(False)
            print(f"{method} seed {seed} done ({time.time() - start:.0f} s)", flush=True)
    rows = save(True)
    print(f"\n{'method':<10} {'protocol':<10} " + " ".join(f"{k:>15}" for k in SHOWN) + "   command")
    for row in rows:
        cells = " ".join(f"{'–':>15}" if row[k]["mean"] is None else
                         f"{row[k]['mean']:>8.{3 if k == 'mrr' else 2}f} ± {row[k]['std']:<4.{3 if k == 'mrr' else 2}f}"
                         for k in SHOWN)
        print(f"{row['method']:<10} {row['protocol']:<10} {cells}   {row['command']}")
    print(f"\nwrote {args.out} ({time.time() - start:.0f} s)")
    return rows


if __name__ == "__main__":
    main()
