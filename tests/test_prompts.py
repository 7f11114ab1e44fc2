"""Prompt sets from files and datasets, with malformed rows reported by number."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from core.prompts import PromptFileError, load_prompts


def test_reference_json_format_and_bad_rows(tmp_path, caplog):
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"instruction": " a "}, {"instruction": ""}, {"other": 1}, {"instruction": "b"}]))
    with caplog.at_level(logging.WARNING):
        assert load_prompts(path) == ["a", "b"]
    assert "rows 2, 3" in caplog.text
    with pytest.raises(PromptFileError, match="rows 2, 3"):
        load_prompts(path, on_bad_row="error")


def test_jsonl_txt_parquet_and_dataset_folder(tmp_path):
    import datasets

    jsonl = tmp_path / "p.jsonl"
    jsonl.write_text('{"q": "one"}\nnot json\n{"q": "two"}\n')
    assert load_prompts(jsonl, column="q") == ["one", "two"]
    txt = tmp_path / "p.txt"
    txt.write_text("first\n\nsecond\n")
    assert load_prompts(txt) == ["first", "second"]
    ds = datasets.Dataset.from_dict({"prompt": ["x", "y", "z"]})
    ds.to_parquet(str(tmp_path / "p.parquet"))
    assert load_prompts(tmp_path / "p.parquet", column="prompt", limit=2) == ["x", "y"]
    ds.save_to_disk(str(tmp_path / "ds"))
    assert load_prompts(str(tmp_path / "ds"), column="prompt") == ["x", "y", "z"]


def test_missing_and_empty_sources(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_prompts(tmp_path / "missing.json")
    empty = tmp_path / "e.json"
    empty.write_text("[]")
    with pytest.raises(PromptFileError, match="no prompts"):
        load_prompts(empty)
    broken = tmp_path / "b.json"
    broken.write_text("[{")
    with pytest.raises(PromptFileError, match="not valid JSON"):
        load_prompts(broken)


def test_shared_prompt_sets_load(shared_data):
    prompts = load_prompts(shared_data / "prompts" / "saferlhf_test.json")
    assert len(prompts) == 200


def test_where_keeps_matching_rows_only(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"instruction": "a", "source": "helpful-base"}, {"instruction": "b", "source": "x"},
                                {"instruction": "c", "source": "helpful-base"}, {"instruction": "d"}]))
    assert load_prompts(path, where={"source": "helpful-base"}) == ["a", "c"]
    assert load_prompts(path, where={"source": "helpful-base"}, limit=1) == ["a"]
    with pytest.raises(PromptFileError, match="among the rows with"):
        load_prompts(path, where={"source": "nowhere"})


def test_training_prompts_mix_sources_and_leave_out_excluded_sets(tmp_path):
    from core.prompts import training_prompts
    from driver.config import load_config

    harmful, benign, heldout = tmp_path / "h.json", tmp_path / "b.json", tmp_path / "held.json"
    harmful.write_text(json.dumps([{"instruction": f"harm {i}"} for i in range(5)]))
    benign.write_text(json.dumps([{"instruction": f"ben {i}", "source": "helpful-base" if i % 2 else "other"}
                                  for i in range(10)]))
    heldout.write_text(json.dumps([{"instruction": "ben 3"}, {"instruction": "harm 0"}]))
    cfg = load_config(None, [
        f"prompts.mix=[{{source: {harmful}, limit: 3}}, {{source: {benign}, where: {{source: helpful-base}}}}]",
        f"prompts.exclude=[{{source: {heldout}}}]",
    ])
    assert training_prompts(cfg.prompts) == ["harm 1", "harm 2", "ben 1", "ben 5", "ben 7", "ben 9"]
    everything = load_config(None, [f"prompts.mix=[{{source: {heldout}}}]", f"prompts.exclude=[{{source: {heldout}}}]"])
    with pytest.raises(PromptFileError, match="every training prompt"):
        training_prompts(everything.prompts)
    with pytest.raises(ValueError, match=r"prompts.mix\[0\].where must be a mapping"):
        load_config(None, [f"prompts.mix=[{{source: {harmful}, where: 3}}]"])


def test_single_source_config_still_works(tmp_path):
    from core.prompts import training_prompts
    from driver.config import load_config

    path = tmp_path / "p.txt"
    path.write_text("one\ntwo\nthree\n")
    assert training_prompts(load_config(None, [f"prompts.source={path}", "prompts.limit=2"]).prompts) == ["one", "two"]
