"""The CTR view: fields, labels, global feature ids, and the sample split."""
from __future__ import annotations

import numpy as np
import pytest

from conftest import features_data
from recsize.data import CTR_FIELDS, Interactions, ctr_view, encode_fields, split_ctr


def hand_data() -> Interactions:
    return Interactions(
        "hand", 3, 2, [0, 1, 2, 0], [1, 0, 1, 0], rating=np.array([4, 3, 5, 1], np.float32),
        user_features={"age": np.array([17, 18, 56]), "gender": np.array(["F", "M", "M"]),
                       "occupation": np.array(["student", "writer", "student"]),
                       "zip_code": np.array(["85711", "94043", "85002"])},
        item_features={"genre": np.array(["Drama", "Comedy"]), "release_year": np.array(["1995", "1996"]),
                       "title": np.array(["A", "B"])})


def test_ctr_view_by_hand():
    c = ctr_view(hand_data())
    assert c.fields == CTR_FIELDS and c.n_fields == 8 and len(c) == 4
    assert c.name == "hand-ctr"
    np.testing.assert_array_equal(c.y, [1, 0, 1, 0])  # rating >= 4
    assert c.y.dtype == np.float32
    # values per field: user 3, item 2, age buckets {0 (<18), 1 (18-24), 6 (56+)}, gender 2,
    # occupation 2, zip prefix {85, 94}, genre 2, year 2
    np.testing.assert_array_equal(np.diff(c.offsets), [3, 2, 3, 2, 2, 2, 2, 2])
    assert c.n_features == 18
    np.testing.assert_array_equal(c.vocab[2], ["0", "1", "6"])
    np.testing.assert_array_equal(c.vocab[5], ["85", "94"])
    # sample 2: user 2 (age 56, M, student, 85...), item 1 (Comedy, 1996)
    local = c.X[2] - c.offsets[:-1]
    assert [c.vocab[f][local[f]] for f in range(8)] == ["2", "1", "6", "M", "student", "85", "Comedy", "1996"]
    np.testing.assert_array_equal(c.field_of_feature(), np.repeat(np.arange(8), np.diff(c.offsets)))
    assert "4 samples, 8 fields, 18 features" in str(c)


def test_ctr_view_offsets_consistent():
    d = features_data()
    c = ctr_view(d)
    assert c.X.shape == (len(d), 8) and c.X.dtype == np.int64
    np.testing.assert_array_equal(c.y, (d.rating >= 4).astype(np.float32))
    for f in range(8):
        assert (c.X[:, f] >= c.offsets[f]).all() and (c.X[:, f] < c.offsets[f + 1]).all()
        # every row of the field's range is used by some sample (the vocabulary comes from the data)
        assert len(np.unique(c.X[:, f])) == c.offsets[f + 1] - c.offsets[f] == len(c.vocab[f])
    assert c.offsets[0] == 0 and c.offsets[-1] == c.n_features
    assert np.diff(c.offsets)[0] == d.n_users and np.diff(c.offsets)[1] == d.n_items


def test_split_ctr():
    c = ctr_view(features_data(n=600))
    s = split_ctr(c, seed=1)
    assert (len(s.train), len(s.valid), len(s.test)) == (480, 60, 60)
    all_idx = np.concatenate([s.train, s.valid, s.test])
    np.testing.assert_array_equal(np.sort(all_idx), np.arange(600))
    X, y = s.part("valid")
    np.testing.assert_array_equal(X, c.X[s.valid])
    np.testing.assert_array_equal(y, c.y[s.valid])
    assert s.feature_counts().sum() == 480 * 8
    t = split_ctr(c, seed=1)
    np.testing.assert_array_equal(s.test, t.test)
    assert not np.array_equal(s.test, split_ctr(c, seed=2).test)
    assert "480 samples" in str(s)
    with pytest.raises(ValueError, match="ratios"):
        split_ctr(c, (0.5, 0.5))
    with pytest.raises(ValueError, match="ratios"):
        split_ctr(c, (0.0, 0.5, 0.5))


def test_ctr_view_needs_features(tiny_data):
    with pytest.raises(ValueError, match="side features"):
        ctr_view(tiny_data)


def test_encode_fields():
    c = encode_fields([np.array(["b", "a", "b"]), np.array([3, 1, 2])], ("x", "y"), [1, 0, 1], "t")
    np.testing.assert_array_equal(c.offsets, [0, 2, 5])
    np.testing.assert_array_equal(c.X, [[1, 4], [0, 2], [1, 3]])
    with pytest.raises(ValueError, match="columns"):
        encode_fields([np.array([1])], ("x", "y"), [1], "t")
