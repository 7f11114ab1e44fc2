"""``mara reader-reward``: the reader reward, from answers to the training prompt pools that a
strong reader labelled blind (evaluation/reader_labels.py, rewards/recipe/reader.py).

    mara splits --shared-data ../shared/data --out runs/splits
    mara eval --prompts reward_harmful=runs/splits/reward_harmful.json ... --sampled --max-new-tokens 128 --out E
    mara reader-reward built E                 # E/built.jsonl: the records plus a built answer each
    mara reader-reward items E --per-file 120  # E/reading/items_*.jsonl (blind A/B) + key.json
    ... readers label the items by docs/RUBRIC.md into verdict files
    mara reader-reward labels E --verdicts 'E/reading/verdicts_*.jsonl' --grader NAME --out labels.jsonl
    mara reader-reward build --labels labels.jsonl --out-dir rewards/data --cache runs/reader/features.npz
    mara reader-reward check H --verdicts V   # the shipped heads against a blind read of H (mara blind pairs H)
    mara reader-reward gate --labels rewards/data/reader_labels.jsonl   # the request gate, from the same rows
"""

from __future__ import annotations

import argparse
import datetime
import glob
import json
from pathlib import Path


def add_reader_reward_parser(sub) -> argparse.ArgumentParser:
    p = sub.add_parser("reader-reward", help="label answers blind and build the reader reward and judge",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    steps = p.add_subparsers(dest="step", required=True)
    built = steps.add_parser("built", help="a built answer (an opening the upstream continues) per record")
    built.add_argument("eval_dir")
    built.add_argument("--batch-size", type=int, default=32)
    built.add_argument("--seed", type=int, default=0)
    items = steps.add_parser("items", help="shuffled blind A/B items and the hidden key")
    items.add_argument("eval_dir")
    items.add_argument("--per-file", type=int, default=120, help="items per file (one reader's batch)")
    items.add_argument("--seed", type=int, default=0)
    labels = steps.add_parser("labels", help="unblind verdict files into labelled rows with their provenance")
    labels.add_argument("eval_dir")
    labels.add_argument("--verdicts", required=True, help="a file or a glob of JSON-lines verdict files")
    labels.add_argument("--grader", required=True, help="who read the items (recorded with every row)")
    labels.add_argument("--out", required=True)
    build = steps.add_parser("build", help="train the reader reward (reward rows) and judge (judge rows)")
    build.add_argument("--labels", required=True, action="append",
                       help="labelled rows (mara reader-reward labels); repeatable, the files' rows together")
    build.add_argument("--out-dir", default="rewards/data")
    build.add_argument("--cache", help="an .npz file keeping the answers' features between runs")
    build.add_argument("--model", default="smollm2", help="the LLM that reads the answers")
    build.add_argument("--seed", type=int, default=0)
    check = steps.add_parser("check", help="the shipped reader heads' figures on a blind read of an evaluation")
    check.add_argument("eval_dir", help="a mara eval folder with blind/key.json (mara blind pairs)")
    check.add_argument("--verdicts", required=True, help="the reader's verdicts on its blind/pairs.jsonl")
    check.add_argument("--out", help="also write the figures here (JSON)")
    gate = steps.add_parser("gate", help="the request gate, fitted to the readers' verdicts on the requests")
    gate.add_argument("--labels", required=True, help="labelled rows (mara reader-reward labels)")
    gate.add_argument("--out", default="rewards/data/request_gate.safetensors")
    gate.add_argument("--reference", default="embedded",
                      help="response-class head file whose request features the gate reads and whose gate's "
                           "recall of the reader-harmful validation requests it matches (embedded: the safety reward)")
    p.set_defaults(func=_run)
    return p


def _run(args: argparse.Namespace) -> int:
    from core.atomic import write_json_atomic
    from core.jsonl import read_jsonl
    from evaluation import reader_labels
    from evaluation.answers_file import write_records

    if args.step == "build":
        return _build(args)
    if args.step == "check":
        return _check(args)
    if args.step == "gate":
        return _gate(args)
    folder = Path(args.eval_dir)
    reading = folder / "reading"
    if args.step == "built":
        records = list(read_jsonl(folder / "answers.jsonl"))
        done = _read_if_present(folder / "built.jsonl")
        have = {_record_id(r) for r in done}
        todo = [r for r in records if _record_id(r) not in have]
        with_built = done + _built_answers(todo, folder, args.batch_size, args.seed + len(done))
        write_records(folder / "built.jsonl", with_built)
        print(f"{len(with_built)} records with a built answer in {folder / 'built.jsonl'} ({len(todo)} new)")
        return 0
    keys = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(reading.glob("key_*.json"))]
    if args.step == "items":
        # Pairs already given to readers (in an earlier key) are not given again; records
        # without a built answer yet give their agent/greedy pair only.
        built = {_record_id(r): r for r in _read_if_present(folder / "built.jsonl")}
        records = [built.get(_record_id(r), r) for r in read_jsonl(folder / "answers.jsonl")]
        items, key = reader_labels.reading_items(records, seed=args.seed + len(keys), batch=len(keys),
                                                 skip=reader_labels.read_before(keys))
        reading.mkdir(parents=True, exist_ok=True)
        first_file = len(list(reading.glob("items_*.jsonl")))
        starts = range(0, len(items), args.per_file)
        for n, start in enumerate(starts):
            write_records(reading / f"items_{first_file + n:02d}.jsonl", items[start:start + args.per_file])
        write_json_atomic(reading / f"key_{len(keys):02d}.json", key)
        print(f"wrote {len(items)} items in {len(starts)} files to {reading}")
        return 0
    key = {"items": {item_id: item for k in keys for item_id, item in k["items"].items()}}
    built = {_record_id(r): r for r in _read_if_present(folder / "built.jsonl")}
    records = [built.get(_record_id(r), r) for r in read_jsonl(folder / "answers.jsonl")]
    verdicts = [v for path in sorted(glob.glob(args.verdicts)) for v in read_jsonl(Path(path))]
    if not verdicts:
        raise FileNotFoundError(f"no verdicts in {args.verdicts}")
    provenance = {"rubric_version": reader_labels.RUBRIC_VERSION, "grader": args.grader,
                  "date": datetime.date.today().isoformat(), "licence": reader_labels.LICENCES}
    rows = reader_labels.labelled_rows(records, key, verdicts, provenance)
    write_records(Path(args.out), rows)
    print(f"wrote {len(rows)} labelled answers ({len(verdicts)} verdicts) to {args.out}")
    return 0


def _read_if_present(path: Path) -> list[dict]:
    from core.jsonl import read_jsonl

    return list(read_jsonl(path)) if path.is_file() else []


def _record_id(record: dict) -> tuple[str, int]:
    return record["prompt_set"], record["index"]


def _built_answers(records: list[dict], folder: Path, batch_size: int, seed: int) -> list[dict]:
    """The records with ``answers["built"]``: the upstream sampling on from an opening
    (``reader_labels.BUILT_OPENINGS``), as long as the evaluation's answers."""
    from core.config import SamplingConfig
    from envs.generation import upstream_answers
    from envs.upstream import load_upstream
    from evaluation.reader_labels import built_openings

    eval_args = json.loads((folder / "eval_args.json").read_text(encoding="utf-8"))
    llm = load_upstream(eval_args.get("model") or "smollm2", device="cpu")
    sampling = SamplingConfig(max_new_tokens=int(eval_args.get("max_new_tokens", 128)))
    openings = built_openings(records, seed)
    answers = upstream_answers(llm, [r["prompt"] for r in records], sampling, sample=True, seed=seed,
                               batch_size=batch_size, openings=openings)
    return [{**r, "answers": {**r["answers"], "built": answer}} for r, answer in zip(records, answers)]



def _build(args: argparse.Namespace) -> int:
    """Features of every labelled answer, then the two heads and their figures."""
    import numpy as np

    from core.atomic import write_json_atomic
    from core.jsonl import read_jsonl
    from rewards.answer_reader import MAX_TOKENS, READ_LAYERS, AnswerReader
    from rewards.recipe import reader

    rows = [row for path in args.labels for row in read_jsonl(Path(path))]
    keys = [reader.row_key(r) for r in rows]
    cached: dict[str, np.ndarray] = {}
    if args.cache and Path(args.cache).is_file():
        with np.load(args.cache, allow_pickle=False) as f:
            cached = dict(zip(f["keys"].astype(str), f["features"]))
    todo = list(dict.fromkeys(k for k in keys if k not in cached))
    if todo:
        model = AnswerReader(args.model)
        first = {k: i for i, k in reversed(list(enumerate(keys)))}
        found = model.features([rows[first[k]]["prompt"] for k in todo], [rows[first[k]]["answer"] for k in todo])
        cached.update(zip(todo, found))
        if args.cache:
            Path(args.cache).parent.mkdir(parents=True, exist_ok=True)
            np.savez(args.cache, keys=np.array(list(cached)), features=np.stack(list(cached.values())))
    features = np.stack([cached[k] for k in keys])
    out = Path(args.out_dir)
    report = {}
    for which, split in (("reward", "reward"), ("judge", "judge")):
        head, choice, tried = reader.choose_and_train(features, rows, split, seed=args.seed)
        valid = [i for i, r in enumerate(rows) if r["split"] == "validation"]
        other = "judge" if split == "reward" else "reward"
        held = [i for i, r in enumerate(rows) if r["split"] == other]
        report[which] = {"choice": choice, "grid": tried,
                         "validation": reader.figures(head, features[valid], [rows[i] for i in valid]),
                         f"{other}_rows": reader.figures(head, features[held], [rows[i] for i in held]),
                         "trained_on": sum(r["split"] == split for r in rows)}
        head.save(out / f"reader_{which}.safetensors",
                  {"model": args.model, "layers": json.dumps(list(READ_LAYERS)), "max_tokens": MAX_TOKENS,
                   "split": split, "labels_file": ", ".join(Path(p).name for p in args.labels), "choice": json.dumps(choice)})
    write_json_atomic(out / "reader_figures.json", report)
    print(json.dumps({w: {"choice": r["choice"], "validation": r["validation"]} for w, r in report.items()}, indent=1))
    return 0


def _gate(args: argparse.Namespace) -> int:
    """The request gate (rewards/recipe/request_gate.py), and how it and the reference flag the
    validation requests."""
    import numpy as np

    from core.jsonl import read_jsonl
    from rewards.embedded import head_path
    from rewards.recipe import request_gate as recipe
    from rewards.request_gate import GATE_THRESHOLD, RequestGate
    from rewards.response_class import harm_probability, load_heads

    reference_path = head_path(args.reference, "response-class")
    verdicts = recipe.reader_requests(list(read_jsonl(Path(args.labels))))
    fit = [(p, y) for (s, p), y in verdicts.items() if s in recipe.FIT_SPLITS]
    valid = [(p, y) for (s, p), y in verdicts.items() if s == "validation"]
    if not fit or not valid:
        raise ValueError(f"{args.labels}: the gate needs rows of the {'/'.join(recipe.FIT_SPLITS)} and validation splits")
    reference = RequestGate(reference_path)
    valid_prompts, valid_harmful = [p for p, _ in valid], np.array([y for _, y in valid])
    valid_features = reference.request_features(valid_prompts)  # read once: the gate reads the same features
    reference_flags = harm_probability(reference.heads, valid_features) >= GATE_THRESHOLD
    recall = float(reference_flags[valid_harmful].mean())
    weight, bias = recipe.fit_gate(reference.request_features([p for p, _ in fit]), np.array([y for _, y in fit]),
                                   valid_features, valid_harmful, recall)
    recipe.write_gate(args.out, reference_path, weight, bias, {
        "recipe": "rewards/recipe/request_gate.py", "labels_file": Path(args.labels).name,
        "fit_requests": len(fit), "validation_requests": len(valid), "l2_c": recipe.L2_C})
    flags = harm_probability(load_heads(args.out)[0], valid_features) >= GATE_THRESHOLD  # the file as written
    figures = {"validation reader-harmful flagged": {"gate": float(flags[valid_harmful].mean()), "reference": recall},
               "validation reader-benign flagged": {"gate": float(flags[~valid_harmful].mean()),
                                                    "reference": float(reference_flags[~valid_harmful].mean())}}
    print(json.dumps({"wrote": args.out, **figures}, indent=1))
    return 0


def _check(args: argparse.Namespace) -> int:
    """Pair agreement, AUC and signal to noise of the shipped reward and judge on the answers
    a reader labelled in a blind read (``rewards.recipe.reader.figures``)."""
    from core.atomic import write_json_atomic
    from core.jsonl import read_jsonl
    from evaluation.reader_labels import labelled_rows
    from rewards.answer_reader import AnswerReaderScorer, ReaderHead
    from rewards.embedded import shipped_head_path
    from rewards.recipe import reader

    folder = Path(args.eval_dir)
    key = json.loads((folder / "blind" / "key.json").read_text(encoding="utf-8"))
    rows = labelled_rows(list(read_jsonl(folder / "answers.jsonl")), key, list(read_jsonl(Path(args.verdicts))), {})
    report = {}
    # Both heads read with the same model and layers: one feature pass serves both.
    scorer = AnswerReaderScorer(str(shipped_head_path("reader-reward")))
    features = scorer.reader.features([r["prompt"] for r in rows], [r["answer"] for r in rows])
    for which in ("reader-reward", "reader-judge"):
        head = ReaderHead.load(shipped_head_path(which))
        if head.weight.shape[1] != features.shape[1]:
            raise ValueError(f"{which} reads other features than reader-reward: check it on its own")
        report[which] = {"all": reader.figures(head, features, rows)}
        for prompt_set in sorted({r["prompt_set"] for r in rows}):
            chosen = [i for i, r in enumerate(rows) if r["prompt_set"] == prompt_set]
            report[which][prompt_set] = reader.figures(head, features[chosen], [rows[i] for i in chosen])
    if args.out:
        write_json_atomic(args.out, report)
    print(json.dumps(report, indent=1))
    return 0
