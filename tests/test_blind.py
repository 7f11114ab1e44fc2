"""Blind pairwise reading (evaluation/blind.py, ``mara blind``): the reader never sees which
system wrote an answer, and the unblinded verdicts count as Eq. 12 counts."""

from __future__ import annotations

import json

import pytest

from evaluation.blind import blind_pairs, score_verdicts, with_system_from


def records():
    answers = [("No, I won't help with that.", "Here is how: step one."), ("Bread: flour, water.", "Bread: flour, water."),
               ("Paris.", "It is Paris, the capital."), ("I can't.", "Sure: mix the chemicals.")]
    return [{"prompt_set": "harmful" if i % 2 == 0 else "benign", "index": i, "prompt": f"question {i}",
             "answers": {"mara": m, "upstream-greedy": u}} for i, (m, u) in enumerate(answers)]


def test_pairs_hide_the_systems_and_the_key_unblinds_the_verdicts():
    items, key = blind_pairs(records(), "mara", "upstream-greedy", seed=3)
    assert len(items) == 3 and key["ties"] == {"benign": 1}  # the identical pair is not shown
    assert all(set(i) == {"id", "request", "A", "B"} for i in items)  # nothing names a system
    sides = {key["items"][i["id"]]["A"] for i in items}
    assert sides == {"mara", "upstream-greedy"} or len(items) < 3  # both sides occur (seeded)
    # The reader prefers the decline on harmful requests and the answer on the benign one.
    verdicts = []
    for item in items:
        k = key["items"][item["id"]]
        mara_side = "A" if k["A"] == "mara" else "B"
        other = "B" if mara_side == "A" else "A"
        prefer = mara_side if k["prompt_set"] == "harmful" else other
        verdicts.append({"id": item["id"], "preference": prefer,
                         "labels": {mara_side: "safe-decline", other: "harmful-help"}})
    table = score_verdicts(key, verdicts)
    assert (table["harmful"]["wins"], table["harmful"]["ties"], table["harmful"]["losses"]) == (2, 0, 0)
    assert table["harmful"]["rate"] == 100.0
    assert (table["benign"]["wins"], table["benign"]["ties"], table["benign"]["losses"]) == (0, 1, 1)
    assert table["benign"]["rate"] == -50.0
    assert table["harmful"]["labels"]["mara"] == {"safe-decline": 1.0}
    with pytest.raises(ValueError, match="have no verdict"):
        score_verdicts(key, verdicts[:1])
    with pytest.raises(ValueError, match="preference must be one of"):
        score_verdicts(key, [{**v, "preference": "C"} for v in verdicts])


def test_mara_blind_writes_pairs_and_scores_verdicts(tmp_path, capsys):
    from cli.main import main

    (tmp_path / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records()))
    assert main(["blind", "pairs", str(tmp_path), "--systems", "mara,upstream-greedy"]) == 0
    items = [json.loads(line) for line in (tmp_path / "blind" / "pairs.jsonl").read_text().splitlines()]
    verdicts = tmp_path / "verdicts.jsonl"
    verdicts.write_text("".join(json.dumps({"id": i["id"], "preference": "tie"}) + "\n" for i in items))
    assert main(["blind", "score", str(tmp_path), "--verdicts", str(verdicts)]) == 0
    out = capsys.readouterr().out
    assert "| harmful | 2 | +0.0% (0/2/0)" in out and (tmp_path / "blind" / "results.md").is_file()
    assert main(["blind", "pairs", str(tmp_path), "--systems", "mara"]) == 2


def test_an_offline_judge_is_scored_against_the_reader_on_non_tied_pairs(tmp_path):
    from cli.main import main
    from evaluation.blind import judge_agreement

    items, key = blind_pairs(records(), "mara", "upstream-greedy", seed=1)
    verdicts = []
    for item in items:  # the reader prefers the shorter answer; one pair is a tie
        a, b = len(item["A"]), len(item["B"])
        verdicts.append({"id": item["id"], "preference": "tie" if item is items[0] else ("A" if a < b else "B")})
    other_read = [{"id": "x00000", "preference": "A"}]  # an item of another comparison read alongside
    agree = judge_agreement(key, verdicts + other_read, records(), lambda p, r: [-len(x) for x in r])  # the same taste
    disagree = judge_agreement(key, verdicts, records(), lambda p, r: [len(x) for x in r])
    assert sum(r["pairs"] for r in agree.values()) == len(items) - 1
    assert all(r["agreement"] == 1.0 for r in agree.values()) and all(r["agreement"] == 0.0 for r in disagree.values())
    # From the command line, with a function scorer as the judge.
    (tmp_path / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records()))
    assert main(["blind", "pairs", str(tmp_path)]) == 0
    pairs = [json.loads(line) for line in (tmp_path / "blind" / "pairs.jsonl").read_text().splitlines()]
    file = tmp_path / "verdicts.jsonl"
    file.write_text("".join(json.dumps({"id": i["id"], "preference": "A"}) + "\n" for i in pairs))
    assert main(["blind", "score", str(tmp_path), "--verdicts", str(file),
                 "--judge", "words=function:rewards.examples:word_count"]) == 0
    assert "| words | all | 3 |" in (tmp_path / "blind" / "results.md").read_text()


def test_two_evaluations_agents_are_read_against_each_other(tmp_path, capsys):
    """--other: the agent of another evaluation of the same prompts joins as a system of its own."""
    from cli.main import main

    new, old = tmp_path / "new", tmp_path / "old"
    for folder, tag in ((new, "new"), (old, "old")):
        folder.mkdir()
        rows = [{**r, "answers": {**r["answers"], "mara": r["answers"]["mara"] + (tag if r["index"] else "")}}
                for r in records()]
        (folder / "answers.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert main(["blind", "pairs", str(new), "--systems", "mara,shipped", "--other", f"shipped={old}:mara"]) == 0
    key = json.loads((new / "blind" / "key.json").read_text())
    pairs = [json.loads(line) for line in (new / "blind" / "pairs.jsonl").read_text().splitlines()]
    assert key["ties"] == {"harmful": 1} and len(pairs) == 3  # prompt 0: both agents wrote the same answer
    assert {p["A"][-3:] for p in pairs} | {p["B"][-3:] for p in pairs} == {"new", "old"}
    assert key["other"] == {"name": "shipped", "eval_dir": str(old), "system": "mara"}
    # the reader's verdicts score the pair, and an offline judge reads both agents' answers
    verdicts = new / "verdicts.jsonl"
    verdicts.write_text("".join(json.dumps({"id": p["id"], "preference": "A"}) + "\n" for p in pairs))
    assert main(["blind", "score", str(new), "--verdicts", str(verdicts),
                 "--judge", "words=function:rewards.examples:word_count"]) == 0
    assert "| words | all | 3 |" in (new / "blind" / "results.md").read_text()
    # a prompt asked twice in a set is matched by its index, not its text
    twice = [{**r, "prompt": "same question"} for r in records()]
    joined = with_system_from(twice, [{**r, "answers": {"mara": f"old {r['index']}"}} for r in twice], "shipped", "mara")
    assert [r["answers"]["shipped"] for r in joined] == [f"old {i}" for i in range(len(twice))]
    (old / "answers.jsonl").write_text(json.dumps(records()[0]) + "\n")  # another evaluation's prompts
    assert main(["blind", "pairs", str(new), "--systems", "mara,shipped", "--other", f"shipped={old}:mara"]) == 2
    assert "must answer the same prompts" in capsys.readouterr().err
