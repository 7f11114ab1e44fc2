"""Preference data loading (formats, bad rows) and ``mara train-reward`` end to end."""

from __future__ import annotations

import json

import pytest

from cli.train_reward import train_reward_main
from rewards.recipe.pairs import PairDataError, load_pairs, split_hh_pair
from rewards.recipe.train import split_by_prompt

HH_ROW = {"chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How do I bake bread?\n\nAssistant: Knead and bake.",
          "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: How do I bake bread?\n\nAssistant: No."}


def _jsonl(path, rows):
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")
    return path


def test_hh_dialogues_split_at_the_last_shared_assistant_turn():
    prompt, chosen, rejected = split_hh_pair(HH_ROW["chosen"], HH_ROW["rejected"])
    assert prompt == "Human: Hi\n\nAssistant: Hello!\n\nHuman: How do I bake bread?"  # multi-turn keeps dialogue
    assert (chosen, rejected) == ("Knead and bake.", "No.")
    single = split_hh_pair("\n\nHuman: Why?\n\nAssistant: Because.", "\n\nHuman: Why?\n\nAssistant: No.")
    assert single == ("Why?", "Because.", "No.")
    # A chosen answer that itself contains an assistant marker stays whole.
    tricky = split_hh_pair("\n\nHuman: Q\n\nAssistant: A\n\nAssistant: more", "\n\nHuman: Q\n\nAssistant: B")
    assert tricky == ("Q", "A\n\nAssistant: more", "B")


def test_every_format_and_every_bad_row_is_accounted_for(tmp_path):
    rows = [
        {"prompt": "p1", "chosen": "good", "rejected": "bad"},                    # 1 triple
        HH_ROW,                                                                   # 2 hh
        {"prompt": "p3", "response_0": "unsafe", "response_1": "safe",
         "safer_response_id": 1, "better_response_id": 0},                        # 3 pku
        "{not json",                                                              # 4 malformed
        {"prompt": "p5", "chosen": "same", "rejected": "same"},                   # 5 identical
        {"prompt": "p6", "chosen": "", "rejected": "x"},                          # 6 malformed
        {"prompt": "p7", "response_0": "a", "response_1": "b", "safer_response_id": 2},  # 7 malformed
        {"something": "else"},                                                    # 8 malformed
    ]
    path = _jsonl(tmp_path / "mixed.jsonl", rows)
    pairs, report = load_pairs(path)
    assert [(p.prompt, p.chosen, p.rejected, p.row) for p in pairs] == [
        ("p1", "good", "bad", 1), ("Human: Hi\n\nAssistant: Hello!\n\nHuman: How do I bake bread?",
                                   "Knead and bake.", "No.", 2), ("p3", "safe", "unsafe", 3)]
    assert [n for n, _ in report.bad] == [4, 6, 7, 8]
    assert report.identical == [5]
    assert report.rows == 8 and report.pairs == 3
    assert "row 4: not valid JSON" in report.summary()
    better, _ = load_pairs(path, pku_label="better")
    assert (better[2].chosen, better[2].rejected) == ("unsafe", "safe")
    with pytest.raises(PairDataError, match=r"row 4: .*row 6: .*row 7: .*row 8: "):
        load_pairs(path, on_bad_row="error")


def test_json_and_parquet_sources(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [{"prompt": "a", "chosen": "b", "rejected": "c"}, {"prompt": "d", "chosen": "e", "rejected": None}]
    (tmp_path / "p.json").write_text(json.dumps(rows))
    pq.write_table(pa.Table.from_pylist(rows), str(tmp_path / "p.parquet"))
    for name in ("p.json", "p.parquet"):
        pairs, report = load_pairs(tmp_path / name)
        assert len(pairs) == 1 and [n for n, _ in report.bad] == [2]
    with pytest.raises(FileNotFoundError):
        load_pairs(tmp_path / "missing.jsonl")


def test_held_out_split_is_disjoint_by_prompt_and_seeded(tmp_path):
    from rewards.recipe.pairs import Pair

    pairs = [Pair(f"p{i % 20}", f"c{i}", f"r{i}") for i in range(100)]
    train, held = split_by_prompt(pairs, 0.25, seed=3)
    assert not {p.prompt for p in train} & {p.prompt for p in held}
    assert len({p.prompt for p in held}) == 5 and len(train) + len(held) == 100
    assert split_by_prompt(pairs, 0.25, seed=3) == (train, held)


def test_train_reward_refuses_bad_rows_when_asked(tmp_path):
    path = _jsonl(tmp_path / "bad.jsonl", [{"prompt": "a", "chosen": "b", "rejected": "c"}, "[1, 2"])
    with pytest.raises(PairDataError, match="row 2"):
        train_reward_main(["--data", str(path), "--out", str(tmp_path / "h.safetensors"), "--on-bad-row", "error"])
    assert not (tmp_path / "h.safetensors").exists()


def test_train_reward_on_shared_pairs_beats_chance(shared_data, tmp_path, capsys):
    from rewards.embedding_bt import read_head_metadata

    source = shared_data / "preferences" / "hh_harmless_base.jsonl"
    # A small slice plus two malformed rows, to see them reported with their line numbers.
    lines = source.read_text(encoding="utf-8").splitlines()[:200]
    lines[10] = "{oops"
    lines[20] = json.dumps({"chosen": "no assistant turn here", "rejected": "nor here"})
    data = tmp_path / "slice.jsonl"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "head.safetensors"
    rc = train_reward_main(["--data", str(data), "--out", str(out), "--heldout", "0.42", "--epochs", "20",
                            "--hidden", "0", "--device", "cpu", "--seed", "0"])
    assert rc == 0
    captured = capsys.readouterr()
    assert "row 11: not valid JSON" in captured.out + captured.err
    assert "row 21:" in captured.out + captured.err
    figures = json.loads(read_head_metadata(out)["figures"])
    assert figures["malformed_rows"] == 2 and figures["heldout_pairs"] >= 80
    assert figures["heldout_accuracy"] > 0.5, figures
    card = out.with_suffix(".md").read_text()
    assert "mara train-reward --data" in card and "held-out" in card and str(data) in card
