"""The final stage reports on images the search never scored: data.test_ann, or the validation
images past data.val_limit (the trials' per-epoch score covers the first val_limit)."""

from __future__ import annotations

import json

from raypose.data.prepare import build_datasets, image_ids
from raypose.training.config import validate_train_config
from raypose.tuning.final import held_out_split


def test_the_held_out_images_are_the_validation_images_no_trial_was_scored_on(tiny_train_config, tmp_path):
    config = validate_train_config({**tiny_train_config, "data": {**tiny_train_config["data"], "val_limit": 3}})
    split = held_out_split(config, tmp_path)
    _, scored = build_datasets(config.data, config.model.schema)  # what every trial's epochs are scored on
    full = json.loads(config.data.path(config.data.val_ann).read_text())
    held = json.loads(split.ann.read_text())
    assert split.held_out and "past data.val_limit (3)" in split.description
    held_ids = {im["id"] for im in held["images"]}
    assert len(held_ids) == len(full["images"]) - 3 and not held_ids & set(image_ids(scored))
    assert held_ids | set(image_ids(scored)) == {im["id"] for im in full["images"]}
    assert {a["image_id"] for a in held["annotations"]} <= held_ids
    assert len(held["annotations"]) == sum(a["image_id"] in held_ids for a in full["annotations"])
    assert held["categories"] == full["categories"]


def test_without_images_to_hold_out_the_report_says_the_numbers_are_the_selections_own(tiny_train_config, tmp_path):
    config = validate_train_config({**tiny_train_config, "data": {**tiny_train_config["data"], "val_limit": None}})
    split = held_out_split(config, tmp_path)
    assert not split.held_out and split.ann == config.data.path(config.data.val_ann)
    assert "the search scored too" in split.description and "data.test_ann" in split.description
    test = {**tiny_train_config["data"], "test_ann": str(config.data.path(config.data.val_ann))}
    given = held_out_split(validate_train_config({**tiny_train_config, "data": test}), tmp_path)
    assert given.held_out and given.description.startswith("data.test_ann")
