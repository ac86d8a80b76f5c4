"""Benchmark: infe.py on one process against `torchrun --nproc_per_node N infe.py`, same flags, same split.

Runs both as a user would (fresh processes, model loading included), then reports each one's wall time, the
evaluation's own examples/s (from its summary), and whether the two predictions files are byte for byte equal,
which data parallelism promises. On CPU the processes split the cores: --threads_per_process (default: cores / N)
keeps the total the same as the single run's.

  python bench/data_parallel.py                                   # the demo's test split, 2 processes
  python bench/data_parallel.py --nproc 4 -- --split dev --device cuda   # flags after -- go to infe.py

Prints a table and writes JSON to bench/results/data_parallel.json (or --out). infe.py needs a checkpoint: the demo's
is written by `python main.py`.
"""
import argparse
import filecmp
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from mel.io.atomic import write_json  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nproc", type=int, default=2, help="processes of the data-parallel run")
    p.add_argument("--threads_per_process", type=int, default=None,
                   help="OMP/torch threads of each process (default: CPU cores / --nproc; the single run gets cores)")
    p.add_argument("--out", default=os.path.join(REPO, "bench", "results", "data_parallel.json"))
    p.add_argument("infe_flags", nargs="*", help="flags for infe.py (after --)")
    return p.parse_args(argv)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(command, threads, predictions):
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    start = time.perf_counter()
    done = subprocess.run(command + ["--predictions_file", predictions], cwd=REPO, env=env, capture_output=True,
                          text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    summary = json.load(open(os.path.splitext(predictions)[0] + ".summary.json"))
    return {"command": " ".join(command), "threads_per_process": threads, "wall_s": seconds,
            "examples": summary["examples"], "eval_examples_per_s": summary["examples_per_s"],
            "accuracy": summary["accuracy"]}


def main(argv=None):
    args = parse_args(argv)
    cores = os.cpu_count() or 1
    per_process = args.threads_per_process or max(1, cores // args.nproc)
    with tempfile.TemporaryDirectory() as tmp:
        single_file, parallel_file = os.path.join(tmp, "single.jsonl"), os.path.join(tmp, "parallel.jsonl")
        single = run([sys.executable, "infe.py", *args.infe_flags], cores, single_file)
        parallel = run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(args.nproc),
                        "--master_port", str(free_port()), "infe.py", *args.infe_flags], per_process, parallel_file)
        identical = filecmp.cmp(single_file, parallel_file, shallow=False)
    result = {"cpu_count": cores, "nproc": args.nproc, "single": single, "data_parallel": parallel,
              "predictions_identical": identical, "wall_speedup": single["wall_s"] / parallel["wall_s"],
              "eval_speedup": parallel["eval_examples_per_s"] / single["eval_examples_per_s"]}
    write_json(args.out, result)
    print(f"infe.py, {single['examples']} examples, {cores} CPU cores\n"
          f"  1 process  ({cores} threads):       {single['wall_s']:6.1f} s wall, "
          f"{single['eval_examples_per_s']:.2f} examples/s in evaluation\n"
          f"  {args.nproc} processes ({per_process} thread(s) each): {parallel['wall_s']:6.1f} s wall, "
          f"{parallel['eval_examples_per_s']:.2f} examples/s in evaluation\n"
          f"  speed-up {result['wall_speedup']:.2f}x wall, {result['eval_speedup']:.2f}x evaluation; predictions "
          f"{'byte for byte identical' if identical else 'DIFFER'}\nWrote {args.out}")
    return result


if __name__ == "__main__":
    main()
