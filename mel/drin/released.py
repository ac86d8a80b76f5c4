"""DRIN's released raw data (WikiDiverse *_w_10cands.json, WikiMEL top100) converted to this project's layout.

DRIN's raw layout (github starreeze/drin, readme.md "Raw Data"; read by preprocess/prepare.py with the paths of
common/args.py), one folder per dataset, splits named train / valid / test:

    wikidiverse/candidates/{split}_w_10cands.json   a JSON list with one list per mention: [0] sentence, [1] image URL,
                                                    [6] gold Wikipedia URL, [7] candidate URLs (10, padded with
                                                    "__nil__"), [9]/[10] character span of the mention (the
                                                    other fields are not read; an empty [6] is read as NIL)
    wikidiverse/entities/entity2brief_{split}.json  {title: short description}; title = the URL's last path
                                                    component, URL-unquoted (underscores kept)
    wikidiverse/entities/wikipedia_entity2imgs.tsv  a header line, then `title@@@@url[AND]url...`
    wikidiverse/images/                             every image as md5(URL file name) + extension (.svg -> .png)
    wikimel/mentions/WIKIMEL_{split}.json           {id: {"sentence", "mentions" (the mention string), "answer" (QID)}}
    wikimel/candidates/top100/candidates-answer.tsv `id<TAB>QID<TAB>QID...` (100 candidates, best first)
    wikimel/candidates/qid2ne.json                  {QID: entity name}
    wikimel/entities/qid2abs.json                   {QID: abstract}
    wikimel/mentions/KVQAimgs/<id before '-'>       the mention's image (no extension added by the original)
    wikimel/entities/cleaned-images/<QID>           the entity's image

This project's layout (docs/data.md, mel/retrieval/candidates.py, mel/drin/features.py), in out_dir:

    {train,dev,test}.json      JSON lines {"text", "mention", "target", "golden", "img_url"} (WikiDiverse adds
                               "mention_span": [start, end), its own character span); target = entity name,
                               golden = the name with spaces as underscores ("NIL" for a mention without a gold)
    entities.txt               every gold and candidate entity name, sorted
    entities.jsonl             {"name", "description", "image": image key or null} in the order of entities.txt
    candidates.<split>.jsonl   {"line", "mention", "candidates", "scores"} per split line; the raw lists carry no
                               scores, so scores are rank-based: round(1 - i / n, 6) for the i-th of n candidates
    image_list.tsv             `key<TAB>absolute path` of every referenced image found on disk, for
                               `prepare.py clip --image_list`

Image keys: WikiDiverse images are keyed by their md5 file name (as the original names them under images/);
WikiMEL's by `KVQAimgs/<file>` and `cleaned-images/<file>`. A mention whose image is missing keeps its key (give it a
feature with `prepare.py clip --default_image`); an entity takes the first of its images found on disk, else null.

Differences from the original's reading, all counted in the summary: WikiMEL mentions that do not occur in their
sentence (the original drops them) are kept; mentions with no candidate at all (every slot "__nil__") are left out,
since a candidate list may not be empty (they count as gold misses in the gold-in-candidates rate, as the
original's acc_correction counts them); WikiMEL names shared by several QIDs become "name (QID)". A WikiDiverse
entity name is the URL path after "/wiki/" (the original takes the last "/" component, which cuts titles such as
"AC/DC"). Images are checked for existence only (prepare.py clip reports unreadable or tiny ones).

    python prepare.py drin_release wikidiverse <raw wikidiverse folder> --dataset wikidiverse
    python prepare.py drin_release wikimel <raw wikimel folder> --dataset wikimel
"""
import hashlib
import json
import logging
import os
import re
from urllib.parse import unquote

from mel.errors import DataError
from mel.io.atomic import atomic_path, write_jsonl, write_lines
from mel.io.datasets import NIL

logger = logging.getLogger(__name__)

RAW_SPLITS = {"train": ("train",), "dev": ("valid", "val", "dev"), "test": ("test",)}  # the original's are "valid"
NIL_PAD = "__nil__"
NO_GOLD = {"", "nil", NIL_PAD}  # golds the original finds in no list (lower-cased): the mention links to nothing here
IMAGE_LIST = "image_list.tsv"
DEFAULT_IMAGE = "default.jpg"  # the original's blank default image, for entities whose image is missing
ENTITY_TEXT_CHARS = 512
SHOWN = 5  # skipped records named in the summary
# the original keeps the extension only for these (.jpeg separately), and stores .svg files as .png
_KEPT_SUFFIX = re.compile(r"\S+(?=\.(?:jpg|JPG|png|PNG|svg|SVG))|\S+(?=\.(?:jpeg|JPEG))")


# ----------------------------------------------------------------------------- names and keys

def wikipedia_title(url):
    """The raw title of a Wikipedia URL: the path after "/wiki/" (else the last "/" component), URL-unquoted."""
    path = url.split("/wiki/", 1)[1] if "/wiki/" in url else url.rsplit("/", 1)[-1]
    return unquote(path)


def clean_name(name):
    """An entity name as the project stores it: one line, single spaces."""
    return " ".join(name.replace("_", " ").split())


def wikidiverse_image_key(url):
    """The file name under images/ of an image URL: md5 of the URL's (still quoted) file name + its extension."""
    file_name = url.split("/")[-1]
    key = hashlib.md5(file_name.encode()).hexdigest() + _KEPT_SUFFIX.sub("", file_name)
    return key.replace(".svg", ".png").replace(".SVG", ".png")


def ranked_scores(n):
    return [round(1 - i / n, 6) for i in range(n)]


# ----------------------------------------------------------------------------- reading

def _require(path):
    if not os.path.exists(path):
        raise DataError(f"{path}: not found; put DRIN's raw release there (readme.md, Raw Data) or fix the folder")


def _load_json(path, kind):
    _require(path)
    with open(path, encoding="utf-8") as f:
        try:
            data = json.load(f)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}: not valid JSON ({e.msg}, line {e.lineno}); download the file again") from None
    if not isinstance(data, kind):
        raise DataError(f"{path}: expected a JSON {kind.__name__}, got {type(data).__name__}")
    return data


def _raw_split_path(pattern, split):
    """The raw file of one of our splits; the original's names first (valid for dev)."""
    paths = [pattern.format(split=name) for name in RAW_SPLITS[split]]
    found = [p for p in paths if os.path.exists(p)]
    if not found:
        raise DataError(f"{paths[0]}: not found (the {split} split); put DRIN's raw release there")
    return found[0]


def _file_index(folder):
    """{name: file name} of a folder's files, also by name without extension; {} for a missing folder."""
    if not os.path.isdir(folder):
        return {}
    files = sorted(os.listdir(folder))
    index = {os.path.splitext(f)[0]: f for f in files if os.path.splitext(f)[1]}
    index.update({f: f for f in files})  # an exact name wins over a stem
    return index


def read_entity_images(path):
    """{title: [image URLs]} of wikipedia_entity2imgs.tsv (a header line, then `title@@@@url[AND]url...`)."""
    _require(path)
    images = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            line = line.strip()
            if number == 1 or not line:
                continue
            if "@@@@" not in line:
                raise DataError(f"{path}, line {number}: expected `title@@@@url[AND]url...`, got {line[:80]!r}")
            title, urls = line.split("@@@@", 1)
            images.setdefault(title, [u for u in urls.split("[AND]") if u])
    return images


# ----------------------------------------------------------------------------- writing

def _check_out_dir(out_dir, overwrite):
    if os.path.exists(os.path.join(out_dir, "train.json")) and not overwrite:
        raise DataError(f"{out_dir}: already holds a train.json; pass overwrite=True (--overwrite) or another folder")


def _example_rows(examples):
    fields = ("text", "mention", "target", "golden", "img_url", "mention_span")  # the span: WikiDiverse's own
    return [{k: ex[k] for k in fields if k in ex} for ex in examples]


def _candidate_rows(examples):
    return [{"line": i, "mention": ex["mention"], "candidates": ex["candidates"],
             "scores": ranked_scores(len(ex["candidates"]))} for i, ex in enumerate(examples, 1)]


def _write_dataset_folder(out_dir, splits, entities, image_paths):
    """splits: {split: [example dicts with "candidates"]}; entities: sorted [{name, description, image, text}]. An
    entity without an image gets the blank default image, as the original's."""
    for split, examples in splits.items():
        write_jsonl(os.path.join(out_dir, f"{split}.json"), _example_rows(examples))
        write_jsonl(os.path.join(out_dir, f"candidates.{split}.jsonl"), _candidate_rows(examples))
    write_lines(os.path.join(out_dir, "entities.txt"), [e["name"] for e in entities])
    if any(e["image"] is None for e in entities):
        from PIL import Image

        path = os.path.join(out_dir, DEFAULT_IMAGE)
        with atomic_path(path) as tmp:
            Image.new("RGB", (224, 224), (255, 255, 255)).save(tmp, format="JPEG")
        image_paths = {**image_paths, DEFAULT_IMAGE: os.path.abspath(path)}
    write_jsonl(os.path.join(out_dir, "entities.jsonl"), [{**e, "image": e["image"] or DEFAULT_IMAGE}
                                                          for e in entities])
    write_lines(os.path.join(out_dir, IMAGE_LIST), [f"{k}\t{p}" for k, p in image_paths.items()])


def _split_stats(examples):
    """Counts of one split's converted mentions, those without any candidate (left out) included."""
    linked = [ex for ex in examples if ex["golden"] != NIL]
    hits = sum(ex["target"] in ex["candidates"] for ex in linked)
    kept = sum(bool(ex["candidates"]) for ex in examples)
    return {"raw": len(examples), "mentions": kept, "dropped_no_candidates": len(examples) - kept,
            "gold_in_candidates": round(hits / max(len(linked), 1), 4)}


def _summarize(name, out_dir, stats, entities, mention_keys, image_paths, extra):
    missing = sorted(k for k in mention_keys if k not in image_paths)
    summary = {"dataset": name, "out_dir": out_dir, "splits": stats, "entities": len(entities),
               "entities_without_description": sum(not e["description"] for e in entities),
               "entity_images": {"found": sum(e["image"] is not None for e in entities),
                                 "missing": sum(e["image"] is None for e in entities)},
               "mention_images": {"found": len(mention_keys) - len(missing), "missing": len(missing)},
               "image_list": len(image_paths), **extra}
    logger.info(f"Converted DRIN's raw {name} into {out_dir}:")
    for split, s in stats.items():
        logger.info(f"  {split}: {s['mentions']:,} mentions of {s['raw']:,} ({s['dropped_no_candidates']} without any "
                    f"candidate left out), gold in candidates {100 * s['gold_in_candidates']:.2f}%"
                    + (f", {s['mention_not_in_sentence']} mention(s) not in their sentence (kept)"
                 if "mention_not_in_sentence" in s else ""))
    logger.info(f"  entities: {len(entities):,} ({summary['entities_without_description']:,} without a description, "
                f"{summary['entity_images']['missing']:,} without an image file)"
                + "".join(f", {k.replace('_', ' ')}: {v:,}" for k, v in extra.items() if isinstance(v, int)))
    if extra.get("skipped_records"):
        logger.warning(f"{extra['skipped_records']:,} record(s) could not be used and were skipped, e.g.: "
                       + " | ".join(extra["skipped_first"]))
    logger.info(f"  mention images: {summary['mention_images']['found']:,} found, {len(missing):,} missing"
                + (f" (e.g. {missing[0]})" if missing else "")
                + f"; {IMAGE_LIST}: {len(image_paths):,} images for `prepare.py clip --image_list`")
    return summary


# ----------------------------------------------------------------------------- WikiDiverse

def _wikidiverse_mention(item, path, index):
    """(example, candidate names) of one record of {split}_w_10cands.json."""
    where = f"{path}, record {index} (0-based)"
    if not isinstance(item, list) or len(item) < 11:
        raise DataError(f"{where}: expected a list of at least 11 fields ([0] text ... [10] span end); fix or "
                        f"remove the record")
    text, image_url, gold_url, urls, start, end = item[0], item[1], item[6], item[7], item[9], item[10]
    if not isinstance(text, str) or not isinstance(image_url, str) or not image_url:
        raise DataError(f"{where}: fields [0] (text) and [1] (image URL) must be strings; fix or remove the record")
    if not isinstance(urls, list) or not all(isinstance(u, str) for u in urls):
        raise DataError(f"{where}: field [7] must be a list of candidate URLs; fix or remove the record")
    if not (gold_url is None or isinstance(gold_url, str)):
        raise DataError(f"{where}: field [6] must be the gold URL (a string); fix or remove the record")
    if not (isinstance(start, int) and isinstance(end, int) and 0 <= start < end <= len(text)):
        raise DataError(f"{where}: span [9]/[10] = {start!r}/{end!r} is not a character span of the text "
                        f"({len(text)} characters); fix or remove the record")
    titles = [wikipedia_title(u) for u in urls if u != NIL_PAD]  # duplicates kept, as the original keeps them
    gold_title = wikipedia_title(gold_url) if gold_url else ""
    if gold_title.strip().lower() in NO_GOLD:
        gold_title = ""
    for title in titles + ([gold_title] if gold_title else []):
        if not clean_name(title):
            raise DataError(f"{where}: a URL of fields [6]/[7] names no Wikipedia title; fix or remove the record")
    target = clean_name(gold_title) if gold_title else NIL
    example = {"text": text, "mention": text[start:end], "target": target,
               "golden": target.replace(" ", "_"), "img_url": wikidiverse_image_key(image_url),
               "mention_span": [start, end], "candidates": [clean_name(t) for t in titles]}
    return example, titles + ([gold_title] if gold_title else [])


class Skipped:
    """The records a conversion could not use: counted, the first few named, the conversion goes on."""

    def __init__(self):
        self.count, self.first = 0, []

    def add(self, error):
        self.count += 1
        if len(self.first) < SHOWN:
            self.first.append(str(error))

    def summary(self):
        return {"skipped_records": self.count, "skipped_first": self.first}


def convert_wikidiverse(raw_dir, out_dir, overwrite=False):
    """DRIN's raw WikiDiverse folder (candidates/, entities/, images/) -> out_dir in this project's layout.
    Returns the summary it prints."""
    _check_out_dir(out_dir, overwrite)
    images = os.path.join(raw_dir, "images")
    on_disk = set(_file_index(images).values())  # exact file names: keys carry their extension
    entity_urls = read_entity_images(os.path.join(raw_dir, "entities", "wikipedia_entity2imgs.tsv"))
    splits, stats, briefs, titles = {}, {}, {}, {}  # titles: name -> raw titles met (brief / image lookups)
    skipped = Skipped()
    for split in RAW_SPLITS:
        path = _raw_split_path(os.path.join(raw_dir, "candidates", "{split}_w_10cands.json"), split)
        records = _load_json(path, list)
        brief_path = _raw_split_path(os.path.join(raw_dir, "entities", "entity2brief_{split}.json"), split)
        for title, brief in _load_json(brief_path, dict).items():
            briefs.setdefault(title, brief if isinstance(brief, str) else "")
        converted = []
        for index, item in enumerate(records):
            try:
                example, met = _wikidiverse_mention(item, path, index)
            except DataError as error:
                skipped.add(error)
                continue
            for title in met:
                titles.setdefault(clean_name(title), {})[title] = None
            converted.append(example)
        splits[split] = [ex for ex in converted if ex["candidates"]]
        stats[split] = _split_stats(converted)
    entities = []
    for name in sorted(titles):
        lookups = [*titles[name], name.replace(" ", "_")]
        brief_title = next((t for t in lookups if briefs.get(t)), None)
        description = briefs[brief_title] if brief_title else ""
        urls = next((entity_urls[t] for t in lookups if t in entity_urls), [])
        image = next((k for k in map(wikidiverse_image_key, urls) if k in on_disk), None)
        # the original's text: the raw title (underscores kept) + ": " + brief, cut to 512; no brief: the title
        raw_title = brief_title or next(iter(titles[name]))
        text = (f"{raw_title}: {description}" if brief_title else raw_title)[:ENTITY_TEXT_CHARS]
        entities.append({"name": name, "description": description, "image": image, "text": text})
    mention_keys = list(dict.fromkeys(ex["img_url"] for exs in splits.values() for ex in exs))
    used = mention_keys + [e["image"] for e in entities if e["image"]]
    image_paths = {k: os.path.abspath(os.path.join(images, k)) for k in dict.fromkeys(used) if k in on_disk}
    _write_dataset_folder(out_dir, splits, entities, image_paths)
    return _summarize("wikidiverse", out_dir, stats, entities, mention_keys, image_paths, skipped.summary())


# ----------------------------------------------------------------------------- WikiMEL

def read_wikimel_candidates(path):
    """{mention id: [QIDs, best first]} of top100/candidates-answer.tsv (`id<TAB>QID<TAB>QID...`)."""
    _require(path)
    lists = {}
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            items = line.strip().split("\t")
            if not items[0]:
                if len(items) > 1:
                    raise DataError(f"{path}, line {number}: expected `mention id<TAB>QID<TAB>QID...`, no id")
                continue
            lists[items[0]] = [q for q in items[1:] if q]
    return lists


def _wikimel_record(mention_id, info, path):
    if not isinstance(info, dict) or not all(isinstance(info.get(k), str) for k in ("sentence", "mentions", "answer")):
        raise DataError(f"{path}, id {mention_id!r}: expected {{\"sentence\": text, \"mentions\": mention, "
                        f"\"answer\": QID}}; fix or remove the record")
    return info["sentence"], info["mentions"], info["answer"]


def _wikimel_names(qids, qid2ne, path):
    """{QID: name}; a name several of the QIDs share becomes "name (QID)" for each of them."""
    names = {}
    for qid in qids:
        name = qid2ne[qid]
        if not isinstance(name, str) or not clean_name(name):
            raise DataError(f"{path}, key {qid!r}: the name must be a non-empty string; fix the entry")
        names[qid] = clean_name(name)
    counts = {}
    for name in names.values():
        counts[name] = counts.get(name, 0) + 1
    return {qid: f"{name} ({qid})" if counts[name] > 1 else name for qid, name in names.items()}


def convert_wikimel(raw_dir, out_dir, overwrite=False):
    """DRIN's raw WikiMEL folder (mentions/, candidates/, entities/) -> out_dir in this project's layout.
    Returns the summary it prints."""
    _check_out_dir(out_dir, overwrite)
    names_path = os.path.join(raw_dir, "candidates", "qid2ne.json")
    qid2ne = _load_json(names_path, dict)
    qid2abs = _load_json(os.path.join(raw_dir, "entities", "qid2abs.json"), dict)
    cands_path = os.path.join(raw_dir, "candidates", "top100", "candidates-answer.tsv")
    id2qids = read_wikimel_candidates(cands_path)
    mention_dir, entity_dir = (os.path.join(raw_dir, "mentions", "KVQAimgs"),
                               os.path.join(raw_dir, "entities", "cleaned-images"))
    mention_files, entity_files = _file_index(mention_dir), _file_index(entity_dir)
    raw, stats, unknown, skipped = {}, {}, set(), Skipped()
    for split in RAW_SPLITS:
        path = _raw_split_path(os.path.join(raw_dir, "mentions", "WIKIMEL_{split}.json"), split)
        rows = []
        for mention_id, info in _load_json(path, dict).items():
            try:
                sentence, mention, answer = _wikimel_record(mention_id, info, path)
                if answer.strip().lower() in NO_GOLD:
                    answer = None  # the original finds it in no list
                elif answer not in qid2ne:
                    raise DataError(f"{path}, id {mention_id!r}: gold QID {answer!r} is not in {names_path}")
                if mention_id not in id2qids:
                    raise DataError(f"{cands_path}: no line for mention id {mention_id!r} of {path}")
            except DataError as error:
                skipped.add(error)
                continue
            qids = id2qids[mention_id]  # duplicates kept, as the original keeps them
            unknown.update(q for q in qids if q not in qid2ne)
            rows.append((mention_id, sentence, mention, answer, [q for q in qids if q in qid2ne]))
        raw[split] = rows
    referenced = dict.fromkeys(q for rows in raw.values() for row in rows for q in [row[3], *row[4]] if q)
    names = _wikimel_names(referenced, qid2ne, names_path)
    splits = {}
    for split, rows in raw.items():
        examples = []
        for mention_id, sentence, mention, answer, qids in rows:
            stem = mention_id.split("-")[0]
            target = names[answer] if answer else NIL
            examples.append({"text": sentence, "mention": mention, "target": target,
                             "golden": target.replace(" ", "_"),
                             "img_url": f"KVQAimgs/{mention_files.get(stem, stem)}",
                             "candidates": [names[q] for q in qids]})
        splits[split] = [ex for ex in examples if ex["candidates"]]
        stats[split] = {**_split_stats(examples),
                        "mention_not_in_sentence": sum(ex["mention"] not in ex["text"] for ex in splits[split])}
    def abstract(qid):
        return qid2abs[qid] if isinstance(qid2abs.get(qid), str) else ""

    # the original's text: the name (qid2ne's, as given) + ". " + the abstract with "." written ";"
    entities = sorted(({"name": names[q], "description": abstract(q),
                        "image": f"cleaned-images/{entity_files[q]}" if q in entity_files else None,
                        "text": f"{qid2ne[q]}. {abstract(q).replace('.', ';')}"}
                       for q in referenced), key=lambda e: e["name"])
    mention_keys = list(dict.fromkeys(ex["img_url"] for exs in splits.values() for ex in exs))
    folders = {"KVQAimgs": (mention_dir, set(mention_files.values())),
               "cleaned-images": (entity_dir, set(entity_files.values()))}
    image_paths = {}
    for key in dict.fromkeys(mention_keys + [e["image"] for e in entities if e["image"]]):
        folder, files = folders[key.split("/", 1)[0]]
        if key.split("/", 1)[1] in files:
            image_paths[key] = os.path.abspath(os.path.join(folder, key.split("/", 1)[1]))
    shared = sum(n.endswith(f" ({q})") for q, n in names.items())
    _write_dataset_folder(out_dir, splits, entities, image_paths)
    return _summarize("wikimel", out_dir, stats, entities, mention_keys, image_paths,
                      {"unknown_candidate_qids_dropped": len(unknown), "names_shared_by_qids": shared,
                       **skipped.summary()})


def convert(source, raw_dir, out_dir, overwrite=False):
    """`prepare.py drin_release`: DRIN's raw `source` ("wikidiverse" or "wikimel") in raw_dir -> dataset folder."""
    converter = {"wikidiverse": convert_wikidiverse, "wikimel": convert_wikimel}[source]
    return converter(raw_dir, out_dir, overwrite=overwrite)
