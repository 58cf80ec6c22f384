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


def test_inference_options_are_chosen_on_the_search_images_and_reported_on_the_held_out_ones(
    tiny_train_config, tmp_path
):
    """Every candidate (stock, each option alone, all four) runs on both splits; the pick is the best
    on the search's images (stock on a tie: an untrained model scores 0 with every option)."""
    import torch

    from raypose.checkpoint import save_checkpoint
    from raypose.model import build_model
    from raypose.tuning.final import CANDIDATES, evaluate_full_validation, inference_table_lines, search_split

    config = validate_train_config({**tiny_train_config, "data": {**tiny_train_config["data"], "val_limit": 2}})
    torch.manual_seed(0)
    model_config = config.model.model_copy(update={"box_score_thresh": 0.0})
    ckpt = save_checkpoint(tmp_path / "ckpt.pth", build_model(model_config).eval(), model_config, epoch=1)
    held, search = held_out_split(config, tmp_path), search_split(config, tmp_path)
    search_ids = {im["id"] for im in json.loads(search.ann.read_text())["images"]}
    held_ids = {im["id"] for im in json.loads(held.ann.read_text())["images"]}
    assert len(search_ids) == 2 and held_ids and not search_ids & held_ids

    out = evaluate_full_validation(ckpt, config, tmp_path, held, search)
    labels = [row["options"] for row in out["options_search"]]
    assert labels == ["stock", "flip_test", "rescore", "oks_nms", "keypoint_probs",
                      "flip_test+rescore+oks_nms+keypoint_probs"] and len(CANDIDATES) == 6
    assert [row["options"] for row in out["options_held_out"]] == labels
    assert all(row["s_per_image"] > 0 and "body_ap" in row for row in out["options_held_out"])
    assert out["inference"]["flip_test"] is False and out["num_images"] == len(held_ids)
    lines = inference_table_lines({"options_search": out["options_search"], "options_held_out": out["options_held_out"],
                                   "inference": "stock", "validation_source": held.description})
    assert "| stock (chosen) |" in "\n".join(lines) and sum(line.startswith("| ") for line in lines) == 7


def test_the_pick_follows_the_search_images_not_the_held_out_ones(monkeypatch, tiny_train_config, tmp_path):
    from types import SimpleNamespace

    import raypose.tuning.final as final

    config = validate_train_config(tiny_train_config)
    search_ap = {"stock": 0.30, "flip_test": 0.34, "rescore": 0.31, "oks_nms": 0.30, "keypoint_probs": 0.30,
                 "flip_test+rescore+oks_nms+keypoint_probs": 0.33}
    monkeypatch.setattr(final, "predict_split", lambda model, device, cfg, split, options, what: (options.label(), 1, 0.1))
    held_ap = dict(search_ap, rescore=0.40)  # on the held-out images another option would have won

    def evaluate(ann, label, **kw):
        return SimpleNamespace(stats={"AP": (search_ap if ann == "search.json" else held_ap)[label]}, parts={})

    monkeypatch.setattr(final, "evaluate_keypoints", evaluate)
    search = SimpleNamespace(ann="search.json")
    options, rows = final.choose_inference_options(None, None, config, search)
    assert options.label() == "flip_test" and [r["AP"] for r in rows] == list(search_ap.values())
    search_ap.update({label: 0.30 for label in search_ap})  # no option beats stock: stock
    assert final.choose_inference_options(None, None, config, search)[0].label() == "stock"
