"""Blind pairwise reading: two systems' answers shown as A and B in a shuffled order, read by
someone who does not know which system wrote which (a strong LLM reader, a person), then
unblinded and counted as ``mara eval`` counts a judge (Eq. 12).

    items, key = blind_pairs(records, "mara", "upstream-greedy", seed=0)   # answers.jsonl records
    ... a reader labels items by docs/RUBRIC.md: {"id", "labels": {"A", "B"}, "preference": "A"|"B"|"tie"}
    table = score_verdicts(key, verdicts)       # per prompt set: win/tie/lose of the first system

Only pairs whose answers differ are shown (identical answers tie without being read); the
key holds, per item, its prompt set and which system is A.
"""

from __future__ import annotations

from collections import Counter

import numpy as np

from evaluation.preference import preference_rate

PREFERENCES = ("A", "B", "tie")


def blind_pairs(records: list[dict], first: str, second: str, seed: int = 0) -> tuple[list[dict], dict]:
    """(items to read, the hidden key): one item per record whose two answers differ, the
    systems' sides drawn at random, the items shuffled."""
    rng = np.random.default_rng(seed)
    items, key = [], {"first": first, "second": second, "items": {}, "ties": Counter()}
    for record in records:
        answers = record["answers"]
        if first not in answers or second not in answers:
            raise ValueError(f"record {record.get('index')} of {record.get('prompt_set')} lacks {first!r} or {second!r}")
        if answers[first] == answers[second]:
            key["ties"][record["prompt_set"]] += 1
            continue
        swap = bool(rng.integers(2))
        a, b = (second, first) if swap else (first, second)
        item_id = f"p{len(items):05d}"
        items.append({"id": item_id, "request": record["prompt"], "A": answers[a], "B": answers[b]})
        key["items"][item_id] = {"prompt_set": record["prompt_set"], "index": record["index"], "A": a, "B": b}
    order = rng.permutation(len(items))
    key["ties"] = dict(key["ties"])
    return [items[i] for i in order], key


def with_system_from(records: list[dict], others: list[dict], name: str, system: str) -> list[dict]:
    """``records`` with one more system, ``name``: the answers of ``system`` in ``others`` (the
    records of another ``mara eval`` of the same prompts, e.g. another agent's), matched by
    prompt set and index, with the same prompt. Every record needs its match."""
    by_index = {(r["prompt_set"], r["index"]): r for r in others}
    out = []
    for record in records:
        other = by_index.get((record["prompt_set"], record["index"]))
        answers = other["answers"] if other and other["prompt"] == record["prompt"] else None
        if answers is None or system not in answers:
            raise ValueError(f"the other evaluation has no {system!r} answer to {record['prompt_set']} prompt "
                             f"#{record['index']}: it must answer the same prompts (prompt sets, --num-prompts, --seed)")
        if name in record["answers"]:
            raise ValueError(f"system name {name!r} is already taken in this evaluation")
        out.append({**record, "answers": {**record["answers"], name: answers[system]}})
    return out


def score_verdicts(key: dict, verdicts: list[dict]) -> dict[str, dict]:
    """Per prompt set: the first system's wins, ties and losses (identical answers are ties),
    its preference rate, and each system's label shares. Every item needs a verdict."""
    first, second = key["first"], key["second"]
    by_id = {v["id"]: v for v in verdicts}
    missing = sorted(set(key["items"]) - set(by_id))
    if missing:
        raise ValueError(f"{len(missing)} items have no verdict, e.g. {missing[:3]}")
    sets: dict[str, dict] = {}
    for item_id, item in key["items"].items():
        verdict = by_id[item_id]
        if verdict.get("preference") not in PREFERENCES:
            raise ValueError(f"item {item_id}: preference must be one of {PREFERENCES}, got {verdict.get('preference')!r}")
        counts = sets.setdefault(item["prompt_set"], {"outcomes": Counter(), "labels": {first: Counter(), second: Counter()}})
        winner = verdict["preference"]
        counts["outcomes"]["tie" if winner == "tie" else "win" if item[winner] == first else "lose"] += 1
        for side in ("A", "B"):
            label = (verdict.get("labels") or {}).get(side)
            if label:
                counts["labels"][item[side]][label] += 1
    table = {}
    for name, counts in sets.items():
        wins, losses = counts["outcomes"]["win"], counts["outcomes"]["lose"]
        ties = counts["outcomes"]["tie"] + key["ties"].get(name, 0)
        read = sum(counts["outcomes"].values())
        table[name] = {"wins": wins, "ties": ties, "losses": losses, "read": read,
                       "rate": preference_rate(wins, ties, losses),
                       "labels": {s: {k: v / max(sum(c.values()), 1) for k, v in sorted(c.items())}
                                  for s, c in counts["labels"].items()}}
    return table


def judge_agreement(key: dict, verdicts: list[dict], records: list[dict], score) -> dict[str, dict]:
    """Per prompt set, how often an offline judge orders a read pair as the reader did, over
    the pairs the reader did not call a tie: ``score(prompts, answers) -> scores``, higher is
    better. A judge's tie (equal scores) counts as a disagreement. Verdicts on items of another
    key (a read that held several comparisons) are passed over, as ``score_verdicts`` does."""
    by_record = {(r["prompt_set"], r["index"]): r for r in records}
    read = [(v, key["items"][v["id"]]) for v in verdicts
            if v["id"] in key["items"] and v.get("preference") in ("A", "B")]
    prompts, answers = [], []
    for _, item in read:
        record = by_record[(item["prompt_set"], item["index"])]
        prompts += [record["prompt"]] * 2
        answers += [record["answers"][item["A"]], record["answers"][item["B"]]]
    scores = np.asarray(score(prompts, answers), dtype=float).reshape(-1, 2)
    table: dict[str, dict] = {}
    for (verdict, item), (a, b) in zip(read, scores):
        row = table.setdefault(item["prompt_set"], {"pairs": 0, "agree": 0})
        row["pairs"] += 1
        row["agree"] += int((a > b) if verdict["preference"] == "A" else (b > a))
    for row in table.values():
        row["agreement"] = row["agree"] / row["pairs"]
    return table


def verdicts_markdown(key: dict, table: dict[str, dict]) -> str:
    """The blind read as a table: the first system's preference rate over the second, with counts."""
    first, second = key["first"], key["second"]
    lines = [f"# Blind read: {first} against {second}", "",
             "| prompt set | pairs read | preference (win/tie/lose) | labels " + first + " | labels " + second + " |",
             "|---|---:|---:|---|---|"]
    for name, row in table.items():
        labels = [", ".join(f"{k} {100 * v:.0f}%" for k, v in row["labels"][s].items()) or "-" for s in (first, second)]
        lines.append(f"| {name} | {row['read']} | {row['rate']:+.1f}% ({row['wins']}/{row['ties']}/{row['losses']}) | "
                     f"{labels[0]} | {labels[1]} |")
    lines += ["", "Ties include the pairs whose answers were identical (not shown to the reader)."]
    return "\n".join(lines) + "\n"
