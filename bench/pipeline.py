"""Benchmark: GEMEL's evaluation and training, the fast path against the straightforward one.

For each configuration (an LM, a number of demonstrations, a slice of the demo data) it measures, in this one process
so that ratios are fair:
  * evaluation samples/s: the fast path (mel.gemel.evaluation.evaluate: length-bucketed batches of --eval_bs, one
    prefill per example, beam_search.constrained_beam_search) against the straightforward one (GEMEL's original way: one example at a time,
    transformers' generate() with 5 beams and a prefix_allowed_tokens_fn that walks a GENRE-style nested-dict tree from
    the root for every beam at every step), plus the share of predictions on which the two agree;
  * training samples/s: the fast path (main.train's loop: length-bucketed batches of --train_bs, GEMEL.forward computing
    logits at target positions only) against the straightforward one (batch 1, logits over the whole sequence and
    transformers' own loss from `labels`, gradient accumulation over --train_bs examples); both take one AdamW step per
    --train_bs examples;
  * peak memory of each path (see "Memory" below), the fast path at its batch size, the straightforward one at batch 1
    and at the fast path's batch size.

  python bench/pipeline.py --quick                        # CI: tiny OPT, 16 dev examples, 4 demonstrations (< 60 s)
  python bench/pipeline.py                                # tiny OPT at 4 and 16 demonstrations, SmolLM2-135M demo
  python bench/pipeline.py --device cuda --gpu_model opt-1.3b   # adds a config-built OPT-1.3B (random weights)

Prints a table and writes JSON to bench/results/pipeline.json (or --out): {command, quick, device, device_name,
cpu_count, torch_threads, glibc_keeps_freed_memory, torch, transformers, repeats, memory_method, seconds_total,
targets: [{config, target, value, met}], results: [per configuration {name, lm, demonstrations, dtype, device,
attn_implementation, lm_parameters, repeats, eval_bs, train_bs, num_beams, max_new_tokens, prompt_tokens: {mean, min,
max}, eval: {examples, seconds, samples_per_s (each {fast, straightforward}), speedup, agreement, agreeing, compared,
disagreements: [{line, fast, straightforward}], fast_accuracy, predictions: {fast, straightforward}}, train: {examples,
seconds, samples_per_s, speedup, loss_max_abs_diff_batch1}, memory: [{phase, path, batch_size, peak_added_mb}], and
with --gpu_model / --profile also utilisation / profile}]}.

Timing: both paths of a configuration run alternately (straightforward, fast, straightforward, ...) after an untimed
warm-up each, and the best of --repeats passes is kept, so load from other processes hurts both alike. One torch thread
by default (--threads): on a shared 2-core machine a second OpenMP thread waiting for a busy core makes every small op
cost a scheduler time slice.
Both paths normalise a name's summed log-probabilities by its length (EOS included), so in float32 they must agree
on every example.

Memory: on CPU, torch's allocations are invisible to tracemalloc, so all phases of a configuration run again in one
fresh subprocess on the longest batches: per phase, a one-example warm-up, then freed heap is returned to the OS
(malloc_trim), the kernel's peak-RSS mark is reset (/proc/self/clear_refs), and the figure is VmHWM - VmRSS around the
batch: the memory the work adds on top of the model and data. The subprocess runs with MALLOC_MMAP_THRESHOLD_=65536 so
that RSS follows live tensors (repeat runs agree within 1 MB; with glibc's adaptive threshold they varied by 30%).
On CUDA it is torch.cuda.max_memory_allocated() minus
the memory allocated before the batch, in this process.

GPU utilisation (--gpu_model): the FLOPs of one fast pass are counted by torch.utils.flop_counter (matmuls and, on
CUDA, the attention kernels; on CPU its SDPA kernel is not counted; backward passes through the frozen LM count the
input gradients only, as executed), divided by the best pass time, and compared with the GPU's dense half-precision
peak (--peak_tflops, or a table of known GPUs).

--profile adds, per configuration, a cProfile breakdown (cumulative seconds of collate, embed, prefill, beam search
and its parts) and the top torch ops of each evaluation path.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import io
import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass

import numpy as np
import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.append(os.path.join(REPO, "bench"))  # rss.py; the repository root stays first

from mel.gemel.evaluation import EvalSettings, evaluate, generate  # noqa: E402
from mel.gemel.experiment import Experiment, Split  # noqa: E402
from mel.io.datasets import image_key, load_image_features, load_mention_embeddings, read_split  # noqa: E402
from mel.models.loading import keep_freed_memory_for_reuse, load_tokenizer, pick_dtype, resolve_model  # noqa: E402
from mel.retrieval.demonstrations import DemonstrationRetriever  # noqa: E402
from mel.retrieval.encoder import MentionEncoder  # noqa: E402
from mel.tree.store import read_entity_names  # noqa: E402
from mel.tree.trie import PrefixTree, genre_nested_dict  # noqa: E402
from model import GEMEL  # noqa: E402
from rss import peak_rss_since_reset, reset_peak_rss  # noqa: E402
from utils import PromptBuilder, length_bucketed_batches  # noqa: E402

DEMO_DIR = os.path.join(REPO, "data", "demo")
DIM_CLIP, PREFIX_LENGTH = 1024, 4
NUM_BEAMS, MAX_NEW_TOKENS = 5, 32

# The tiny OPT of the tests (tests/conftest.py), with room for 16 demonstrations (prompts up to ~1,400 tokens).
TINY_OPT = dict(hidden_size=32, num_hidden_layers=2, ffn_dim=64, num_attention_heads=4, max_position_embeddings=2048,
                word_embed_proj_dim=32)
# Config-built OPTs (random weights, no download); the shapes of facebook/opt-*. opt-125m checks the code path on CPU.
GPU_MODELS = {
    "opt-125m": dict(hidden_size=768, num_hidden_layers=12, ffn_dim=3072, num_attention_heads=12),
    "opt-1.3b": dict(hidden_size=2048, num_hidden_layers=24, ffn_dim=8192, num_attention_heads=32),
    "opt-6.7b": dict(hidden_size=4096, num_hidden_layers=32, ffn_dim=16384, num_attention_heads=32),
}
# Dense float16/bfloat16 tensor-core peak (TFLOP/s, no sparsity) by device-name substring, most specific first.
GPU_PEAK_TFLOPS = [("H200", 989.0), ("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.0), ("GH200", 989.0),
                   ("A100", 312.0), ("L40S", 362.0), ("L4", 121.0), ("A10G", 70.0), ("A10", 125.0),
                   ("V100", 125.0), ("T4", 65.0)]


@dataclass
class Config:
    name: str           # label in the table
    lm: str             # "tiny-opt", "smollm2-135m" or a key of GPU_MODELS
    demos: int          # demonstrations per example
    dev: int            # dev examples evaluated (the first ones of dev.json)
    train: int          # training examples of a training pass (the first ones of train.json)
    straight_dev: int   # dev examples the straightforward path evaluates (a prefix of the fast path's)
    straight_train: int
    repeats: int | None = None  # timed passes per path (default --repeats)


# ----------------------------------------------------------------------------------------------- data and models

class DemoData:
    """The demo dataset (data/demo) read once: splits, image features, demonstrations for any count, prefix tree."""

    def __init__(self, tokenizer, dev_limit, train_limit):
        self.tokenizer = tokenizer
        self.train_all = read_split(os.path.join(DEMO_DIR, "train.json"))
        self.dev = read_split(os.path.join(DEMO_DIR, "dev.json"))[:dev_limit]
        self.train = self.train_all[:train_limit]
        keys = list(dict.fromkeys(image_key(ex) for ex in self.train_all + self.dev))
        feats = load_image_features(os.path.join(DEMO_DIR, "clip_vit_large_patch14_1024.hdf5"), keys, DIM_CLIP)
        row = {k: i for i, k in enumerate(keys)}
        self.features = lambda exs: feats[[row[image_key(ex)] for ex in exs]]  # noqa: E731
        embeddings = load_mention_embeddings(os.path.join(DEMO_DIR, "minilm-l6_train_mention_embeddings.pkl"),
                                             len(self.train_all), "data/demo/train.json")
        self.retriever = DemonstrationRetriever(embeddings, self.train_all)
        encoder = MentionEncoder("minilm-l6")
        self.dev_queries = encoder.encode([ex["mention"] for ex in self.dev])
        self.train_queries = encoder.encode([ex["mention"] for ex in self.train])
        del encoder
        # Built here from the entity list, as prepare.py does, so the benchmark does not depend on a bundled tree file.
        self.tree = PrefixTree.from_names(read_entity_names(os.path.join(DEMO_DIR, "entities.txt")), tokenizer)
        self.nested = GenreTrie(self.tree.sequences())
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.builder = PromptBuilder(tokenizer, self.train_all, self.features(self.train_all), PREFIX_LENGTH, pad)
        self.builder.prepare(self.dev + self.train)

    def splits(self, demos):
        """(dev Split, train Split) with `demos` demonstrations per example, as experiment.load_experiment builds them."""
        dev = self.retriever.retrieve(self.dev_queries, demos)
        train = self.retriever.retrieve(self.train_queries, demos, queries=self.train, exclude_self=True)
        return (Split("dev", self.dev, dev, self.features(self.dev)),
                Split("train", self.train, train, self.features(self.train)))


def build_lm(name, vocab_size, dtype, device):
    """A frozen LM: the tiny OPT or a GPU_MODELS OPT built from a config (seeded random weights), or SmolLM2-135M."""
    from transformers import AutoModelForCausalLM, OPTConfig, OPTForCausalLM

    if name == "smollm2-135m":
        lm = AutoModelForCausalLM.from_pretrained(resolve_model(name), dtype=dtype).to(device)
    else:
        shape = TINY_OPT if name == "tiny-opt" else dict(GPU_MODELS[name], max_position_embeddings=2048,
                                                         word_embed_proj_dim=GPU_MODELS[name]["hidden_size"])
        config = OPTConfig(vocab_size=vocab_size, bos_token_id=2, eos_token_id=2, pad_token_id=1, **shape)
        torch.manual_seed(0)
        with torch.device(device):  # initialise on the device: an OPT-6.7B would take minutes on the CPU
            lm = OPTForCausalLM._from_config(config, dtype=dtype)
    lm.eval()
    lm.requires_grad_(False)
    return lm


def build_model(name, vocab_size, dtype, device):
    lm = build_lm(name, vocab_size, dtype, device)
    torch.manual_seed(1)
    return GEMEL(lm, DIM_CLIP, PREFIX_LENGTH)


# ----------------------------------------------------------------------------------------------- straightforward path

class GenreTrie:
    """GEMEL's prefix tree as released: a nested dict {token: {token: ...}} walked from the root (GENRE's Trie.get)."""

    def __init__(self, sequences):
        self.trie_dict = genre_nested_dict(sequences)

    def get(self, prefix):
        node = self.trie_dict
        for token in prefix:
            if token not in node:
                return []
            node = node[token]
        return list(node.keys())


def prefix_allowed_tokens(trie, eos):
    """GEMEL's prefix_allowed_tokens_fn for one generate() call, with the answer start tracked explicitly.

    transformers 5 generate() from inputs_embeds returns only the generated tokens (4.30 prepended a BOS that GEMEL
    searched for), so the answer starts at the input length seen at the first call; the prefix is [EOS] + generated.
    Off the tree GENRE returns []; transformers 5 rejects an empty list, so [EOS] is allowed instead (such a beam
    already scores -inf, as in the fast path's FELL_OFF_TREE_SCORE rule, and can never win).
    """
    start = []

    def allowed(batch_id, sent):
        if not start:
            start.append(sent.shape[0])
        return trie.get([eos] + sent[start[0]:].tolist()) or [eos]

    return allowed


def straightforward_generate(model, batch, trie, eos, num_beams, max_new_tokens):
    """Answer token lists of a batch by transformers' generate() with the nested-dict tree."""
    from transformers import GenerationConfig

    inputs_embeds = model.embed(batch)
    mask = batch.attention_mask.to(inputs_embeds.device)
    config = GenerationConfig(max_new_tokens=max_new_tokens, num_beams=num_beams, do_sample=False, early_stopping=False,
                              length_penalty=1.0, num_return_sequences=1, eos_token_id=eos, pad_token_id=eos)
    sequences = model.lm.generate(inputs_embeds=inputs_embeds, attention_mask=mask, generation_config=config,
                                  prefix_allowed_tokens_fn=prefix_allowed_tokens(trie, eos))
    return [row[:row.index(eos)] if eos in row else row for row in sequences.tolist()]


@torch.no_grad()
def straightforward_eval(model, builder, tokenizer, split, trie, count, batch_size=1):
    """Predicted names of the first `count` examples, `batch_size` at a time in file order (the original: 1)."""
    model.eval()
    preds = []
    for start in range(0, count, batch_size):
        idx = list(range(start, min(start + batch_size, count)))
        batch = builder.collate([split.examples[i] for i in idx], [split.demos[i] for i in idx], split.images[idx],
                                training=False)
        tokens = straightforward_generate(model, batch, trie, tokenizer.eos_token_id, NUM_BEAMS, MAX_NEW_TOKENS)
        preds += [p.strip(" ") for p in tokenizer.batch_decode(tokens, skip_special_tokens=True)]
    return preds


def straightforward_loss(model, batch):
    """The original's loss: logits over the whole sequence, transformers' cross-entropy from `labels`."""
    device = model.linear.weight.device
    return model.lm(inputs_embeds=model.embed(batch), attention_mask=batch.attention_mask.to(device),
                    labels=batch.labels.to(device)).loss


def straightforward_train(model, builder, split, count, accum):
    """One pass over `count` examples at batch 1, an optimizer step every `accum` examples (gradient accumulation)."""
    optimizer = make_optimizer(model)
    model.train()
    for i in range(count):
        batch = builder.collate([split.examples[i]], [split.demos[i]], split.images[[i]], training=True)
        (straightforward_loss(model, batch) / accum).backward()
        if (i + 1) % accum == 0 or i + 1 == count:
            optimizer_step(model, optimizer)
    model.eval()


# ----------------------------------------------------------------------------------------------- fast path

def fast_eval(model, builder, tokenizer, split, tree, eval_bs):
    """evaluation.evaluate itself (length-bucketed batches, decoding='fast'), its progress bar and prints silenced."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        settings = EvalSettings(num_beams=NUM_BEAMS, max_new_tokens=MAX_NEW_TOKENS, batch_size=eval_bs,
                                show_examples=0)
        result = evaluate(Experiment(model, tokenizer, builder, tree, {}), split, settings)
    return [r["prediction"] for r in result.records]


def fast_train(model, builder, split, train_bs, seed=0):
    """main.train's inner loop for one epoch: length-bucketed shuffled batches, GEMEL.forward, a step per batch."""
    optimizer = make_optimizer(model)
    lengths = [builder.prompt_length(ex, d, with_target=True) for ex, d in zip(split.examples, split.demos)]
    model.train()
    for idx in length_bucketed_batches(lengths, train_bs, shuffle=True, rng=np.random.default_rng(seed)):
        batch = builder.collate([split.examples[i] for i in idx], [split.demos[i] for i in idx], split.images[idx],
                                training=True)
        model(batch).backward()
        optimizer_step(model, optimizer)
    model.eval()


def make_optimizer(model):
    groups = [{"params": [model.linear.weight], "weight_decay": 0.01},
              {"params": [model.linear.bias], "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=1e-4, eps=1e-6)


def optimizer_step(model, optimizer):
    torch.nn.utils.clip_grad_norm_(model.linear.parameters(), 1.0)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


# ----------------------------------------------------------------------------------------------- timing

def synchronize(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_alternately(runs, repeats, device):
    """Best wall time (s) of each named run, run in turns so that background load affects all of them alike.

    runs: {name: (fn, repeats or None)}; a run with its own repeat count stops taking turns once it reached it.
    Returns ({name: best seconds}, {name: result of the last call}).
    """
    best, results, done = {}, {}, {name: 0 for name in runs}
    for turn in range(max(r or repeats for _, r in runs.values())):
        for name, (fn, own) in runs.items():
            if turn >= (own or repeats):
                continue
            synchronize(device)
            start = time.perf_counter()
            results[name] = fn()
            synchronize(device)
            elapsed = time.perf_counter() - start
            best[name] = min(best.get(name, math.inf), elapsed)
            done[name] += 1
    return best, results


# ----------------------------------------------------------------------------------------------- memory

def memory_phases(eval_bs, train_bs):
    """The (phase, path, batch size) triples measured per configuration."""
    return [("eval", "fast", eval_bs), ("eval", "straightforward", 1), ("eval", "straightforward", eval_bs),
            ("train", "fast", train_bs), ("train", "straightforward", 1), ("train", "straightforward", train_bs)]


def longest_batches(builder, split, size, training):
    """The `size` examples with the longest prompts, collated (the batch that sets a path's peak memory), and the
    first of them alone (a warm-up that brings in lazily allocated buffers before the measurement)."""
    lengths = [builder.prompt_length(ex, d, with_target=training) for ex, d in zip(split.examples, split.demos)]
    idx = length_bucketed_batches(lengths, size, shuffle=False)[0]
    return [builder.collate([split.examples[i] for i in rows], [split.demos[i] for i in rows], split.images[rows],
                            training=training) for rows in (idx[:1], idx)]


def run_memory_phase(model, batch, tree, nested, eos, phase, path):
    """The work whose peak memory is measured: one batch, as the path processes it."""
    if phase == "eval":
        with torch.no_grad():
            if path == "fast":
                generate(model, batch, tree, NUM_BEAMS, MAX_NEW_TOKENS)
            else:
                straightforward_generate(model, batch, nested, eos, NUM_BEAMS, MAX_NEW_TOKENS)
        return
    model.train()
    loss = model(batch) if path == "fast" else straightforward_loss(model, batch)
    loss.backward()
    model.linear.zero_grad(set_to_none=True)
    model.eval()


def measure_phases(model, tree, nested, jobs, device):
    """Peak memory (MB) each job's batch adds: a one-example warm-up, then the batch, from a reset peak mark."""
    peaks = []
    for phase, path, _, (warm, batch) in jobs:
        run_memory_phase(model, warm, tree, nested, tree.eos_token_id, phase, path)
        if device.type == "cuda":
            gc.collect()
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            run_memory_phase(model, batch, tree, nested, tree.eos_token_id, phase, path)
            torch.cuda.synchronize(device)
            peaks.append((torch.cuda.max_memory_allocated(device) - base) / 2**20)
        else:
            base = reset_peak_rss()
            run_memory_phase(model, batch, tree, nested, tree.eos_token_id, phase, path)
            peaks.append(peak_rss_since_reset() - base)
    return peaks


def memory_worker(job_path):
    """Subprocess side (CPU): rebuild the model, then measure every phase of one configuration."""
    job = torch.load(job_path, weights_only=False)
    torch.set_num_threads(job["threads"])
    model = build_model(job["lm"], job["vocab_size"], pick_dtype(job["dtype"], torch.device("cpu")), "cpu")
    model.linear.load_state_dict(job["linear"])
    tree = PrefixTree.load(job["tree_file"])
    return measure_phases(model, tree, GenreTrie(tree.sequences()), job["jobs"], torch.device("cpu"))


def measure_memory(config, data, model, dtype_name, dev, train, args, device, workdir, tree_file):
    """Peak memory of each memory_phases() entry: in a fresh subprocess on CPU (RSS), in this process on CUDA."""
    jobs = []
    for phase, path, size in memory_phases(args.eval_bs, args.train_bs):
        split = dev if phase == "eval" else train
        jobs.append((phase, path, size, longest_batches(data.builder, split, size, training=(phase == "train"))))
    if device.type == "cuda":
        peaks = measure_phases(model, data.tree, data.nested, jobs, device)
    else:
        job_path = os.path.join(workdir, "memory-job.pt")
        torch.save({"lm": config.lm, "vocab_size": len(data.tokenizer), "dtype": dtype_name,
                    "linear": model.linear.state_dict(), "tree_file": tree_file, "jobs": jobs,
                    "threads": torch.get_num_threads()}, job_path)
        command = [sys.executable, os.path.abspath(__file__), "--memory_job", job_path]
        # A fixed mmap threshold gives every tensor above 64 KiB its own mapping, unmapped on free, so RSS follows the
        # live tensors; with glibc's adaptive threshold the same measurement varied by +-30% from run to run.
        env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
        done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, env=env)
        if done.returncode != 0:
            raise RuntimeError(f"memory worker failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
        peaks = json.loads(done.stdout.strip().splitlines()[-1])
    return [{"phase": phase, "path": path, "batch_size": size, "peak_added_mb": mb}
            for (phase, path, size, _), mb in zip(jobs, peaks)]


# ----------------------------------------------------------------------------------------------- GPU utilisation

def gpu_peak_tflops(device, override):
    if override:
        return override
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in GPU_PEAK_TFLOPS if key in name), None)


def count_flops(fn):
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


# ----------------------------------------------------------------------------------------------- profile

# Functions whose cumulative time (cProfile) says where a pass spends its time: (file suffix, function, label).
PROFILE_POINTS = {
    "fast": [("utils.py", "collate", "collate (prompt ids)"), ("model.py", "embed", "embed (tokens + visual prefix)"),
             ("beam_cache.py", "prefill", "prefill (prompt once per example)"),
             ("beam_search.py", "_beam_search", "beam search (all decoding steps)"),
             ("beam_cache.py", "forward_token", "  LM forward of the steps"),
             ("beam_cache.py", "shared_prompt_attention", "    of which shared-prompt attention"),
             ("beam_search.py", "_top_candidates", "  top-2K candidates (tree-allowed pairs)"),
             ("beam_cache.py", "reorder_beams", "  cache reorder"),
             ("trie.py", "allowed_indices", "  tree lookups"), ("trie.py", "advance", "  tree moves")],
    "straightforward": [("utils.py", "collate", "collate (prompt ids)"),
                        ("model.py", "embed", "embed (tokens + visual prefix)"),
                        ("generation/utils.py", "_beam_search", "transformers beam search"),
                        ("modeling_opt.py", "forward", "  LM forwards (prefill x beams + steps)"),
                        ("modeling_llama.py", "forward", "  LM forwards (prefill x beams + steps)"),
                        ("logits_process.py", "__call__", "  logits processors (prefix fn mask)"),
                        ("pipeline.py", "get", "  nested-dict tree walks")],
}


def profile_pass(fn, points):
    """Seconds of one pass under cProfile, cumulative seconds per PROFILE_POINTS entry, and the top torch ops."""
    import cProfile
    import pstats

    from torch.profiler import ProfilerActivity, profile

    profiler = cProfile.Profile()
    start = time.perf_counter()
    profiler.runcall(fn)
    total = time.perf_counter() - start
    stats = pstats.Stats(profiler).stats  # (file, line, function) -> (calls, primitive calls, own s, cumulative s, ..)
    breakdown = {}
    for suffix, function, label in points:
        # outermost frames only (primitive calls), summed over same-named functions of the file (e.g. OPT's forwards:
        # take the largest, the model's own forward, rather than the sum of nested module forwards)
        times = [value[3] for (file, _, name), value in stats.items() if file.endswith(suffix) and name == function]
        if times:
            breakdown[label] = max(breakdown.get(label, 0.0), max(times) if function == "forward" else sum(times))
    with profile(activities=[ProfilerActivity.CPU]) as torch_profile:
        fn()
    ops = sorted(torch_profile.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)[:10]
    return {"seconds_under_cprofile": total, "cumulative_s": breakdown,
            "top_torch_ops": [{"op": e.key, "self_cpu_s": e.self_cpu_time_total / 1e6, "calls": e.count} for e in ops]}


def print_profile(name, profiles):
    for path, prof in profiles.items():
        print(f"   profile of the {path} path on {prof['examples']} examples ({prof['seconds_under_cprofile']:.2f} s "
              f"under cProfile):")
        for label, seconds in prof["cumulative_s"].items():
            print(f"      {label:<42} {seconds:8.3f} s  {100 * seconds / prof['seconds_under_cprofile']:5.1f}%")
        print("      top torch ops (self CPU): " + ", ".join(f"{o['op']} {o['self_cpu_s']:.3f} s"
                                                           for o in prof["top_torch_ops"][:6]))


# ----------------------------------------------------------------------------------------------- one configuration

def head(split, count):
    return Split(split.name, split.examples[:count], split.demos[:count], split.images[:count])


def run_config(config, data, args, device, workdir, tree_file):
    dtype_name = args.dtype or ("float16" if device.type == "cuda" else "float32")
    dtype = pick_dtype(dtype_name, device)
    tokenizer, builder, tree, nested = data.tokenizer, data.builder, data.tree, data.nested
    repeats = config.repeats or args.repeats
    print(f"\n== {config.name}: {config.lm}, {config.demos} demonstrations, {config.dev} dev examples "
          f"({config.straight_dev} for the straightforward path), {config.train} training examples "
          f"({config.straight_train} straightforward), {dtype_name} on {device}, best of {repeats}", flush=True)
    model = build_model(config.lm, len(tokenizer), dtype, device)
    dev, train = data.splits(config.demos)
    dev, train = head(dev, config.dev), head(train, config.train)
    lengths = [builder.prompt_length(ex, d) for ex, d in zip(dev.examples, dev.demos)]
    result = {"name": config.name, "lm": config.lm, "demonstrations": config.demos, "dtype": dtype_name,
              "device": str(device), "attn_implementation": model.lm.config._attn_implementation,
              "lm_parameters": sum(p.numel() for p in model.lm.parameters()), "repeats": repeats,
              "eval_bs": args.eval_bs, "train_bs": args.train_bs, "num_beams": NUM_BEAMS,
              "max_new_tokens": MAX_NEW_TOKENS,
              "prompt_tokens": {"mean": float(np.mean(lengths)), "min": int(min(lengths)), "max": int(max(lengths))}}

    # ---- evaluation: the straightforward path on the first straight_dev examples (all of them unless the model is
    # large), the fast path on all; agreement is over the examples both evaluated
    straight_dev = head(dev, config.straight_dev)
    straightforward_eval(model, builder, tokenizer, straight_dev, nested, 1)  # warm-up
    fast_eval(model, builder, tokenizer, head(dev, 2), tree, 2)
    best, preds = time_alternately({
        "straightforward": (lambda: straightforward_eval(model, builder, tokenizer, straight_dev, nested,
                                                         config.straight_dev), None),
        "fast": (lambda: fast_eval(model, builder, tokenizer, dev, tree, args.eval_bs), None),
    }, repeats, device)
    fast_preds, straight_preds = preds["fast"], preds["straightforward"]
    agree = sum(a == b for a, b in zip(fast_preds, straight_preds))
    eval_sps = {"fast": config.dev / best["fast"], "straightforward": config.straight_dev / best["straightforward"]}
    result["eval"] = {
        "examples": {"fast": config.dev, "straightforward": config.straight_dev},
        "seconds": best, "samples_per_s": eval_sps, "speedup": eval_sps["fast"] / eval_sps["straightforward"],
        "agreement": agree / config.straight_dev, "agreeing": agree, "compared": config.straight_dev,
        "disagreements": [{"line": ex["line"], "fast": a, "straightforward": b}
                          for ex, a, b in zip(dev.examples, fast_preds, straight_preds) if a != b],
        "fast_accuracy": 100.0 * sum(p == ex["target"] for p, ex in zip(fast_preds, dev.examples)) / config.dev,
        "predictions": {"fast": fast_preds, "straightforward": straight_preds}}
    print(f"   eval: fast {eval_sps['fast']:.2f}/s, straightforward {eval_sps['straightforward']:.2f}/s "
          f"(x{result['eval']['speedup']:.1f}), agreement {agree}/{config.straight_dev}", flush=True)
    if args.profile:
        # on the first 32 (fast) and 8 (straightforward) examples: enough to see the shares, and SmolLM2 stays short
        fast_part, straight_part = head(dev, min(config.dev, 32)), head(dev, min(config.straight_dev, 8))
        result["profile"] = {
            "fast": dict(profile_pass(lambda: fast_eval(model, builder, tokenizer, fast_part, tree, args.eval_bs),
                                      PROFILE_POINTS["fast"]), examples=len(fast_part.examples)),
            "straightforward": dict(profile_pass(lambda: straightforward_eval(
                model, builder, tokenizer, straight_part, nested, len(straight_part.examples)),
                PROFILE_POINTS["straightforward"]), examples=len(straight_part.examples))}
        print_profile(config.name, result["profile"])

    # ---- training
    # Same loss both ways, in eval mode (no dropout): GEMEL.forward at batch 1 against transformers' loss from labels.
    loss_diff = 0.0
    with torch.no_grad():
        for i in range(min(4, config.train)):
            batch = builder.collate([train.examples[i]], [train.demos[i]], train.images[[i]], training=True)
            loss_diff = max(loss_diff, abs(float(model(batch)) - float(straightforward_loss(model, batch))))
    initial = {k: v.clone() for k, v in model.linear.state_dict().items()}
    straight_train = head(train, config.straight_train)
    straightforward_train(model, builder, head(train, 1), 1, 1)  # warm-up
    fast_train(model, builder, head(train, 2), 2)
    best, _ = time_alternately({
        "straightforward": (lambda: straightforward_train(model, builder, straight_train, config.straight_train,
                                                          args.train_bs), None),
        "fast": (lambda: fast_train(model, builder, train, args.train_bs), None),
    }, repeats, device)
    model.linear.load_state_dict(initial)
    train_sps = {"fast": config.train / best["fast"],
                 "straightforward": config.straight_train / best["straightforward"]}
    result["train"] = {"examples": {"fast": config.train, "straightforward": config.straight_train},
                       "seconds": best, "samples_per_s": train_sps,
                       "speedup": train_sps["fast"] / train_sps["straightforward"],
                       "loss_max_abs_diff_batch1": loss_diff}
    print(f"   train: fast {train_sps['fast']:.2f}/s, straightforward {train_sps['straightforward']:.2f}/s "
          f"(x{result['train']['speedup']:.1f}), loss check {loss_diff:.2e}", flush=True)

    # ---- peak memory
    result["memory"] = measure_memory(config, data, model, dtype_name, dev, train, args, device, workdir, tree_file)
    print("   memory (MB added): " + ", ".join(f"{m['phase']}/{m['path']}@{m['batch_size']} {m['peak_added_mb']:.1f}"
                                             for m in result["memory"]), flush=True)

    # ---- share of the GPU's peak reached by the fast paths (config-built OPTs)
    if config.lm in GPU_MODELS:
        peak = gpu_peak_tflops(device, args.peak_tflops)
        flops = {"eval": count_flops(lambda: fast_eval(model, builder, tokenizer, dev, tree, args.eval_bs)),
                 "train": count_flops(lambda: fast_train(model, builder, train, args.train_bs))}
        model.linear.load_state_dict(initial)
        result["utilisation"] = {}
        for phase, count in flops.items():
            achieved = count / result[phase]["seconds"]["fast"] / 1e12
            result["utilisation"][phase] = {"flops_per_pass": count, "achieved_tflops": achieved, "peak_tflops": peak,
                                            "fraction_of_peak": None if peak is None else achieved / peak}
        print("   utilisation: " + ", ".join(
            f"{phase} {u['achieved_tflops']:.2f} TFLOP/s" + ("" if peak is None else
                                                            f" ({100 * u['fraction_of_peak']:.1f}% of {peak:.0f})")
            for phase, u in result["utilisation"].items()), flush=True)
    del model
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return result


# ----------------------------------------------------------------------------------------------- targets

def check_targets(results):
    """The speed and memory targets, for each configuration they apply to: eval >= 10x at 16 demonstrations on the tiny OPT,
    training >= 3x, fast-path memory no higher than the straightforward path's at the same batch size."""
    checks = []
    for r in results:
        if r["lm"] == "tiny-opt" and r["demonstrations"] == 16:
            checks.append({"config": r["name"], "target": "eval speedup >= 10x", "value": r["eval"]["speedup"],
                           "met": r["eval"]["speedup"] >= 10})
        if r["lm"] == "tiny-opt":
            checks.append({"config": r["name"], "target": "train speedup >= 3x", "value": r["train"]["speedup"],
                           "met": r["train"]["speedup"] >= 3})
        mem = {(m["phase"], m["path"], m["batch_size"]): m["peak_added_mb"] for m in r["memory"]}
        for phase, size in (("eval", r["eval_bs"]), ("train", r["train_bs"])):
            ratio = mem[(phase, "fast", size)] / max(mem[(phase, "straightforward", size)], 1e-9)
            checks.append({"config": r["name"], "target": f"{phase} memory fast / straightforward at batch {size} <= 1",
                           "value": ratio, "met": ratio <= 1.0})
        checks.append({"config": r["name"], "target": "agreement 100% (float32)", "value": r["eval"]["agreement"],
                       "met": r["eval"]["agreement"] == 1.0 or r["dtype"] != "float32"})
    return checks


# ----------------------------------------------------------------------------------------------- driver

def configs_for(args):
    if args.quick:
        return [Config("tiny-opt/4", "tiny-opt", 4, dev=16, train=16, straight_dev=16, straight_train=16)]
    configs = [Config("tiny-opt/4", "tiny-opt", 4, dev=80, train=48, straight_dev=80, straight_train=48),
               Config("tiny-opt/16", "tiny-opt", 16, dev=80, train=48, straight_dev=80, straight_train=48),
               # SmolLM2 on a 2-core CPU: a straightforward pass takes minutes, so one pass per path
               Config("smollm2/8", "smollm2-135m", 8, dev=24, train=16, straight_dev=24, straight_train=16, repeats=1)]
    if args.gpu_model:
        configs.append(Config(f"{args.gpu_model}/16", args.gpu_model, 16, dev=80, train=48, straight_dev=16,
                              straight_train=16))
    if args.only:
        unknown = set(args.only) - {c.name for c in configs}
        if unknown:
            raise SystemExit(f"--only: no configuration named {', '.join(sorted(unknown))}; "
                             f"choose from {', '.join(c.name for c in configs)}")
        configs = [c for c in configs if c.name in args.only]
    if args.limit:
        configs = [Config(c.name, c.lm, c.demos, *(min(n, args.limit) for n in (c.dev, c.train, c.straight_dev,
                                                                                  c.straight_train)), c.repeats)
                   for c in configs]
    return configs


def print_table(results, checks):
    head_line = (f"{'config':<14} {'bs':>5} {'eval fast/s':>11} {'eval ref/s':>10} {'x':>6} {'agree':>7} "
                 f"{'train fast/s':>12} {'train ref/s':>11} {'x':>6}  {'eval MB fast|ref@1|ref@bs':>27}  "
                 f"{'train MB fast|ref@1|ref@bs':>27}")
    print("\n" + head_line + "\n" + "-" * len(head_line))
    for r in results:
        e, t = r["eval"], r["train"]
        mem = {(m["phase"], m["path"], m["batch_size"]): m["peak_added_mb"] for m in r["memory"]}

        def triple(phase, bs):
            return (f"{mem[(phase, 'fast', bs)]:.0f} | {mem[(phase, 'straightforward', 1)]:.0f} | "
                    f"{mem[(phase, 'straightforward', bs)]:.0f}")

        print(f"{r['name']:<14} {r['eval_bs']:>2}/{r['train_bs']:<2} {e['samples_per_s']['fast']:>11.2f} "
              f"{e['samples_per_s']['straightforward']:>10.2f} {e['speedup']:>6.1f} {100 * e['agreement']:>6.1f}% "
              f"{t['samples_per_s']['fast']:>12.2f} {t['samples_per_s']['straightforward']:>11.2f} "
              f"{t['speedup']:>6.1f}  {triple('eval', r['eval_bs']):>27}  {triple('train', r['train_bs']):>27}")
        for phase, u in r.get("utilisation", {}).items():
            share = "" if u["fraction_of_peak"] is None else f" = {100 * u['fraction_of_peak']:.1f}% of peak"
            print(f"   {phase}: {u['achieved_tflops']:.2f} TFLOP/s{share}")
    print("\ntargets:")
    for c in checks:
        print(f"  {'MET ' if c['met'] else 'MISS'} {c['config']:<14} {c['target']:<52} {c['value']:.3g}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true",
                        help="CI mode: tiny OPT, 16 dev and 16 training examples, 4 demonstrations, 1 repeat")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (every configuration runs there)")
    parser.add_argument("--dtype", default=None, choices=("float32", "float16", "bfloat16"),
                        help="LM dtype (default: float16 on CUDA, float32 on CPU)")
    parser.add_argument("--gpu_model", default=None, choices=sorted(GPU_MODELS),
                        help="also run a config-built OPT of this size (random weights) at 16 demonstrations and "
                             "report the share of the GPU's peak FLOP/s its fast paths reach")
    parser.add_argument("--peak_tflops", type=float, default=None,
                        help="the device's dense half-precision peak in TFLOP/s (default: from a table of GPUs)")
    parser.add_argument("--eval_bs", type=int, default=16, help="fast path evaluation batch size")
    parser.add_argument("--train_bs", type=int, default=8,
                        help="fast path training batch size; the straightforward path accumulates as many examples")
    parser.add_argument("--repeats", type=int, default=3, help="timed passes per path; the best is kept")
    parser.add_argument("--only", nargs="+", default=None, help="run only these configurations (names in the table)")
    parser.add_argument("--limit", type=int, default=None,
                        help="at most this many dev and training examples per configuration (smoke runs)")
    parser.add_argument("--profile", action="store_true",
                        help="also profile one evaluation pass of each path (cProfile breakdown + top torch ops)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads. Default 1: on a shared machine a second OpenMP thread that waits "
                             "for a busy core turns every small op into a scheduler time slice (measured: a 32-wide "
                             "linear took 8 ms with 2 threads next to another job, 20 us with 1)")
    parser.add_argument("--default_allocator", action="store_true",
                        help="leave glibc's malloc settings alone (by default, as in infe.py on CPU, freed blocks of "
                             "up to 32 MB stay in the process: loading.keep_freed_memory_for_reuse)")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "pipeline.json"), help="JSON results")
    parser.add_argument("--memory_job", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 1
    if min(args.eval_bs, args.train_bs, args.repeats, args.limit or 2) < 1 or (args.limit or 2) < 2:
        parser.error("--eval_bs, --train_bs and --repeats must be at least 1, --limit at least 2")
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.memory_job:
        print(json.dumps(memory_worker(args.memory_job)))
        return None
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available to torch")
    # as infe.py / main.py do on CPU; both paths share this process, so both get it
    allocator_tuned = device.type == "cpu" and not args.default_allocator and keep_freed_memory_for_reuse()
    started = time.perf_counter()
    configs = configs_for(args)
    tokenizer = load_tokenizer("smollm2-135m")
    data = DemoData(tokenizer, dev_limit=max(c.dev for c in configs), train_limit=max(c.train for c in configs))
    results = []
    with tempfile.TemporaryDirectory(prefix="gemel-bench-") as workdir:
        tree_file = os.path.join(workdir, "tree.marisa")
        data.tree.save(tree_file)
        for config in configs:
            results.append(run_config(config, data, args, device, workdir, tree_file))
    checks = check_targets(results)
    print_table(results, checks)
    report = {"command": "python bench/pipeline.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "quick": args.quick, "device": str(device),
              "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
              "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
              "glibc_keeps_freed_memory": bool(allocator_tuned), "torch": torch.__version__,
              "transformers": __import__("transformers").__version__, "repeats": args.repeats,
              "memory_method": ("CUDA: max_memory_allocated - memory_allocated before the batch, in this process"
                                if device.type == "cuda" else
                                "CPU: fresh subprocess per configuration (MALLOC_MMAP_THRESHOLD_=65536); per phase a "
                                "one-example warm-up, then malloc_trim + /proc/self/clear_refs, and VmHWM - VmRSS "
                                "around the batch"),
              "seconds_total": time.perf_counter() - started, "targets": checks, "results": results}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    temporary = args.out + ".tmp"
    with open(temporary, "w") as handle:
        json.dump(report, handle, indent=2)
    os.replace(temporary, args.out)
    print(f"\nwrote {args.out} ({report['seconds_total']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
