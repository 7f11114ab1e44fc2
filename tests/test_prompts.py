"""Prompt sets from files and datasets, with malformed rows reported by number."""

from __future__ import annotations

import json
import logging

import pytest

from mara.prompts import PromptFileError, load_prompts


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
