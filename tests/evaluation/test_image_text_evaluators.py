"""Image-text evaluators on handmade embeddings with known answers: zero-shot classification
(prompt averaging, renormalisation, seen / held-out groups, one-shape images only), retrieval
recall both ways (identical texts and one image's captions count once), the order share."""

import numpy as np
import pytest

from jaxvision.evaluation.image_text import (
    ImageTextEvaluator,
    class_embeddings,
    retrieval_recall,
    zero_shot_ranks,
)


def _unit(degrees):
    """Unit 2-D vectors at the given angles, one row each."""
    radians = np.deg2rad(np.asarray(degrees, float))
    return np.stack([np.cos(radians), np.sin(radians)], axis=-1)


def test_class_embeddings_average_the_prompts_and_renormalise():
    # Class 0: prompts at 0 and 90 degrees -> 45 degrees; class 1: prompt vectors of unequal
    # length count alike (each is normalised first) -> 180 degrees.
    prompts = np.array([[1.0, 0.0], [0.0, 1.0], [-3.0, 0.5], [-3.0, -0.5]])
    classes = class_embeddings(prompts, num_classes=2)
    np.testing.assert_allclose(classes[0], [2**-0.5, 2**-0.5])
    np.testing.assert_allclose(classes[1], [-1.0, 0.0])
    np.testing.assert_allclose(np.linalg.norm(classes, axis=1), 1.0)


def test_zero_shot_ranks_count_the_classes_above_the_true_one():
    classes = _unit([0, 90, 180, 270])
    images = _unit([10, 10, 100, 200])
    labels = np.array([0, 3, 1, 0])
    # 10 deg: 0 first, then 90, 270, 180 -> class 3 ranks 2. 200 deg: 180, 270, 90, 0.
    np.testing.assert_array_equal(zero_shot_ranks(images, classes, labels), [0, 2, 0, 3])


def _batch(rows, **fields):
    return {"mask": np.ones(rows, bool), **fields}


def test_zero_shot_evaluator_reports_seen_and_held_out_on_one_shape_images():
    evaluator = ImageTextEvaluator(("zeroshot",), num_classes=3)
    prompts = np.repeat(_unit([0, 120, 240]), 2, axis=0)  # 2 identical prompts per class
    images = _unit([5, 115, 250, 60, 10, 280])
    labels = np.array([0, 1, 1, 2, 2, 2])  # 250 -> class 2 (wrong); 60 between 0 and 120
    held_out = np.array([0, 0, 1, 1, 0, 1], bool)
    objects = np.array([1, 1, 1, 1, 2, 1])  # row 4 has two shapes: left out
    first = {"image": images[:3], "class_text": prompts}
    second = {"image": images[3:], "class_text": np.zeros_like(prompts)}  # later batches: zeros
    for outputs, rows in ((first, slice(0, 3)), (second, slice(3, 6))):
        batch = {
            "mask": np.ones(3, bool),
            "label": labels[rows],
            "held_out": held_out[rows],
            "num_objects": objects[rows],
        }
        evaluator.add({**outputs, **batch}, batch)
    metrics = evaluator.result("eval")
    # Kept rows 0, 1, 2, 3, 5: top-1 right on 0, 1, 5; row 3 (60 deg, class 2 at 240) ranks 2.
    assert metrics["eval/zeroshot_top1"] == pytest.approx(3 / 5)
    assert metrics["eval/zeroshot_top5"] == 1.0
    assert metrics["eval/zeroshot_seen_top1"] == 1.0  # rows 0, 1
    assert metrics["eval/zeroshot_held_out_top1"] == pytest.approx(1 / 3)  # rows 2, 3, 5
    assert set(metrics) == {
        f"eval/zeroshot_{g}top{k}" for g in ("", "seen_", "held_out_") for k in (1, 5)
    }


def test_masked_rows_count_nowhere():
    evaluator = ImageTextEvaluator(("zeroshot",), num_classes=2)
    batch = {"mask": np.array([True, False]), "label": np.array([0, 0])}
    outputs = {"image": _unit([0, 180]), "class_text": _unit([0, 180]), **batch}
    evaluator.add(outputs, batch)
    assert evaluator.result("eval") == {"eval/zeroshot_top1": 1.0, "eval/zeroshot_top5": 1.0}


# Four pairs: texts A, B, A (the same caption again), C; images at 0, 90, 180, 270 degrees.
TOKENS = np.array([[1, 0], [2, 0], [1, 0], [3, 0]])
IMAGES = _unit([0, 90, 180, 270])
TEXTS = _unit([10, 200, 10, 280])


def test_retrieval_recall_on_a_handmade_case():
    recall = retrieval_recall(IMAGES, TEXTS, TOKENS, ks=(1, 2, 3))
    # image -> text (texts A 10, B 200, C 280): image 0 finds A first; image 1 (90) ranks A, B,
    # C (B second); image 2 (180) B, C, A (A third); image 3 (270) C first.
    assert recall["i2t_recall@1"] == 0.5
    assert recall["i2t_recall@2"] == 0.75
    assert recall["i2t_recall@3"] == 1.0
    # text -> image: A matches images 0 and 2 (0 first); B (200) ranks images 2, 3, 1 (third);
    # C (280) finds image 3 first.
    assert recall["t2i_recall@1"] == pytest.approx(2 / 3)
    assert recall["t2i_recall@2"] == pytest.approx(2 / 3)
    assert recall["t2i_recall@3"] == 1.0
    assert (recall["num_images"], recall["num_texts"]) == (4, 3)


def test_retrieval_counts_one_image_of_several_pairs_once():
    # Pairs 0 and 2 show one image (id 7, its first pair's embedding): images 7, 1, 3.
    recall = retrieval_recall(IMAGES, TEXTS, TOKENS, image_ids=np.array([7, 1, 7, 3]), ks=(1,))
    # image -> text: image 1 ranks A before B; images 7 (0 deg) and 3 find theirs first.
    assert recall["i2t_recall@1"] == pytest.approx(2 / 3)
    # text -> image: B (200) is nearer image 3 (270) than image 1 (90).
    assert recall["t2i_recall@1"] == pytest.approx(2 / 3)
    assert (recall["num_images"], recall["num_texts"]) == (3, 3)


def test_evaluator_ranks_the_first_pairs_and_the_order_share():
    evaluator = ImageTextEvaluator(("retrieval", "order"), retrieval_pairs=4)
    order = np.array([[0.9, 0.1], [0.2, 0.5], [0.0, 0.0], [0.7, 0.3], [0.0, 0.0]])
    order_mask = np.array([True, True, False, True, False])
    extra = np.concatenate([IMAGES, _unit([45])])  # a fifth pair, past retrieval_pairs
    tokens = np.concatenate([TOKENS, [[9, 0]]])
    batch = {"mask": np.ones(5, bool), "tokens": tokens, "order_mask": order_mask}
    outputs = {"image": extra, "text": np.concatenate([TEXTS, _unit([45])]), "order": order}
    evaluator.add({**outputs, **batch}, batch)
    metrics = evaluator.result("test")
    assert metrics["test/i2t_recall@1"] == 0.5 and metrics["test/i2t_recall@10"] == 1.0
    assert metrics["test/retrieval_images"] == 4 and metrics["test/retrieval_texts"] == 3
    assert metrics["test/order_accuracy"] == pytest.approx(2 / 3)
