"""Shared by the tests/ops files: reading stored cases, comparisons that report their error."""

import numpy as np


def unflatten(flat: dict):
    """{"a/b/0": x} -> {"a": {"b": [x]}}: the inverse of make_ops_fixtures.flatten."""
    tree = {}
    for key, value in flat.items():
        node, parts = tree, key.split("/")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value

    def lists(node):
        if not isinstance(node, dict):
            return node
        if node and all(k.isdigit() for k in node):
            return [lists(node[str(i)]) for i in range(len(node))]
        return {k: lists(v) for k, v in node.items()}

    return lists(tree)


def assert_close(ours, expected, atol, rtol=0.0, label=""):
    """assert_allclose that prints the max |difference| (pytest -s shows the agreement)."""
    ours, expected = np.asarray(ours), np.asarray(expected)
    assert ours.shape == expected.shape, (label, ours.shape, expected.shape)
    diff = np.abs(ours.astype(np.float64) - expected.astype(np.float64))
    print(f"{label}: max |diff| {diff.max() if diff.size else 0.0:.3g}")
    np.testing.assert_allclose(ours, expected, atol=atol, rtol=rtol, err_msg=label)


def assert_same_detections(ours: dict, expected: dict, image: int, label=""):
    """One image's detections equal as sets: ours {"boxes", "scores", "classes", "valid"} [B,
    D, ...] against torchvision's padded {"boxes", "scores", "classes", "count"}. Both are in
    descending score order; rows are compared after sorting by (score, class), so the order
    of equal scores does not matter."""
    valid = np.asarray(ours["valid"][image])
    count = int(expected["count"][image])
    assert valid.sum() == count, (label, image, int(valid.sum()), count)
    assert valid[:count].all(), "valid rows come first"
    if count == 0:
        return
    scores = np.asarray(ours["scores"][image])[:count]
    assert np.all(np.diff(scores) <= 0), "descending scores"
    mine = np.lexsort((np.asarray(ours["classes"][image])[:count], -scores))
    theirs = np.lexsort((expected["classes"][image][:count], -expected["scores"][image][:count]))
    np.testing.assert_array_equal(
        np.asarray(ours["classes"][image])[:count][mine], expected["classes"][image][:count][theirs]
    )
    assert_close(
        scores[mine], expected["scores"][image][:count][theirs], 1e-6, label=f"{label} scores"
    )
    assert_close(
        np.asarray(ours["boxes"][image])[:count][mine],
        expected["boxes"][image][:count][theirs],
        1e-4,
        label=f"{label} boxes",
    )
