import numpy as np
import pytest

from raypose.schema import COCO17, COCO23, FOOT_NAMES, schema_for


@pytest.mark.parametrize("schema", [COCO17, COCO23])
def test_flip_index_swaps_left_and_right_names(schema):
    perm = schema.flip_index
    assert sorted(perm.tolist()) == list(range(schema.num_keypoints))
    assert np.array_equal(perm[perm], np.arange(schema.num_keypoints))  # an involution
    for i, j in enumerate(perm):
        name, mirrored = schema.names[i], schema.names[j]
        if name.startswith("left_"):
            assert mirrored == "right_" + name[5:]
        elif name.startswith("right_"):
            assert mirrored == "left_" + name[6:]
        else:
            assert i == j


def test_coco23_extends_coco17_with_the_foot_points():
    assert COCO23.names[:17] == COCO17.names
    assert COCO23.names[17:] == FOOT_NAMES
    assert np.allclose(COCO23.sigmas[:17], COCO17.sigmas)
    assert np.allclose(COCO23.sigmas[17:], COCO17.sigmas[COCO17.index("left_wrist")])
    assert COCO17.sigmas[COCO17.index("nose")] == pytest.approx(0.026)


def test_coco_skeleton_is_one_based_and_in_range():
    skeleton = np.array(COCO23.coco_skeleton())
    assert skeleton.min() == 1 and skeleton.max() == 23
    assert len(COCO23.skeleton) == 25
    category = COCO23.coco_category(7)
    assert category["id"] == 7 and len(category["keypoints"]) == 23


def test_schema_for_rejects_unknown_counts():
    assert schema_for(23) is COCO23
    with pytest.raises(ValueError, match="17"):
        schema_for(5)
    with pytest.raises(KeyError, match="valid names"):
        COCO17.index("left_big_toe")
