"""Prompt files in every accepted format, and items: ids, seeds, cycling."""

import json

import pytest

from ilf.errors import ILFError
from ilf.eval.prompts import load_prompt_file, make_items, prompts_by_id


def test_formats(tmp_path):
    (tmp_path / "p.txt").write_text("a cat\n\n  a dog \n")
    assert load_prompt_file(tmp_path / "p.txt") == [("p00000", "a cat"), ("p00001", "a dog")]
    (tmp_path / "c.txt").write_text("207\n360\n")
    assert load_prompt_file(tmp_path / "c.txt") == [("p00000", 207), ("p00001", 360)]
    (tmp_path / "ir.json").write_text(json.dumps([{"id": "000001-0001", "prompt": "a cute cat"}]))
    assert load_prompt_file(tmp_path / "ir.json") == [("000001-0001", "a cute cat")]
    (tmp_path / "mjhq.json").write_text(json.dumps({"abc": {"category": "animals", "prompt": "a fox"}}))
    assert load_prompt_file(tmp_path / "mjhq.json") == [("abc", "a fox")]
    (tmp_path / "cls.json").write_text(json.dumps([{"id": "x", "class_label": 3}, 5]))
    assert load_prompt_file(tmp_path / "cls.json") == [("x", 3), ("p00001", 5)]


@pytest.mark.parametrize("content", ['[{"id": "a", "prompt": "x"}, {"id": "a", "prompt": "y"}]', '[{"text": 1}]',
                                     '[{"id": "../x", "prompt": "y"}]', "[]"])
def test_bad_files_are_errors(tmp_path, content):
    (tmp_path / "p.json").write_text(content)
    with pytest.raises(ILFError):
        load_prompt_file(tmp_path / "p.json")


def test_items_ids_seeds_and_cycling():
    conds = [("a", "a cat"), ("b", 7)]
    items = make_items(conds, num_images=5, images_per_prompt=2, seed=10)
    assert [it.id for it in items] == ["a_0", "a_1", "b_0", "b_1", "a_2"]
    assert [it.seed for it in items] == [10, 11, 12, 13, 14]
    assert items[2].class_label == 7 and items[2].prompt is None
    assert prompts_by_id(items) == [{"id": "a", "prompt": "a cat"}]
    assert len(make_items(conds, images_per_prompt=3)) == 6
