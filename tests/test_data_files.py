"""A user's data files: CSV (header or not, the target column) and npz, one named error per problem;
splitting, standardising and labels ±1."""

from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from wgflow.data import classes_to_pm1, load_csv, load_data, load_npz, split, standardise
from wgflow.errors import InputError

runner = CliRunner()

# --------------------------------------------------------------------------- loading


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_csv_header_with_target_column_anywhere(tmp_path):
    f = _write(tmp_path / "d.csv", "target,a,b\n1,0.5,2\n0,1.5,-3\n1,2.5,4e-1\n")
    ds = load_data(f)
    np.testing.assert_array_equal(ds.y, [1, 0, 1])
    np.testing.assert_array_equal(ds.X, [[0.5, 2], [1.5, -3], [2.5, 0.4]])
    assert ds.feature_names == ("a", "b") and ds.target_name == "target"
    # another column by name or index
    assert load_csv(f, target="b").target_name == "b"
    np.testing.assert_array_equal(load_csv(f, target=1).y, [0.5, 1.5, 2.5])


def test_csv_header_without_target_column_uses_the_last(tmp_path):
    ds = load_data(_write(tmp_path / "d.csv", "x1,x2,label\n1,2,3\n4,5,6\n"))
    assert ds.target_name == "label"
    np.testing.assert_array_equal(ds.y, [3, 6])


def test_csv_without_header(tmp_path):
    ds = load_data(_write(tmp_path / "d.csv", "1,2,3\n\n4,5,6\n7,8,9\n"))  # a blank line is skipped
    np.testing.assert_array_equal(ds.X, [[1, 2], [4, 5], [7, 8]])
    np.testing.assert_array_equal(ds.y, [3, 6, 9])
    # an all-numeric first row read as a header when told so
    ds = load_csv(tmp_path / "d.csv", header=True)
    assert ds.n == 2 and ds.feature_names == ("1", "2")


@pytest.mark.parametrize(
    "text,kwargs,field,words",
    [
        ("a,b,target\n1,2,0\n3,4,1\n", {"target": "y"}, "data.target", "no column named 'y'"),
        ("1,2,0\n3,4,1\n", {"target": "target"}, "data.target", "no header row"),
        ("a,b\n1,2\n", {"target": 5}, "data.target", "out of range"),
        ("a,b,target\n1,2,0\n3,,1\n5,6,nan\n7,8,1\n", {}, "data.X", r"2 of 4 rows have missing, NaN or infinite values \(lines 3, 4\)"),
        ("a,b,target\n1,2,0\n3,4,NA\n", {}, "data.y", "lines 3"),
        ("a,b,target\n1,2,0\n3,oops,1\n", {}, "data.path", "line 3, column 'b': 'oops' is not a number"),
        ("a,b,target\n1,2,0\n3,4\n", {}, "data.path", "line 3 has 2 cells, the header has 3"),
        ("a\n1\n2\n", {}, "data.path", "at least two"),
        ("a,b,target\n", {}, "data.path", "no data rows"),
    ],
)
def test_bad_csv_files_give_one_named_error(tmp_path, text, kwargs, field, words):
    f = _write(tmp_path / "bad.csv", text)
    with pytest.raises(InputError, match=words) as info:
        load_csv(f, **kwargs)
    assert info.value.field == field
    assert "bad.csv" in str(info.value) and "Fix:" in str(info.value)


def test_npz_loading_and_its_errors(tmp_path):
    X, y = np.arange(12.0).reshape(6, 2), np.array([0, 1, 0, 1, 1, 0])
    np.savez(tmp_path / "ok.npz", X=X, y=y[:, None])  # y as a column is accepted
    ds = load_data(tmp_path / "ok.npz")
    np.testing.assert_array_equal(ds.X, X)
    np.testing.assert_array_equal(ds.y, y)
    assert ds.X.dtype == np.float64
    cases = {
        "keys.npz": (dict(inputs=X, y=y), "has no array 'X'"),
        "object.npz": (dict(X=np.array([[1, "a"]], dtype=object), y=np.ones(1)), "holds Python objects"),
        "strings.npz": (dict(X=np.array([["1", "2"]]), y=np.ones(1)), "not a real number type"),
        "shape.npz": (dict(X=X, y=np.ones(5)), r"shape \(5,\) for 6 rows"),
        "flat.npz": (dict(X=np.ones(6), y=np.ones(6)), "is 1-D"),
        "nan.npz": (dict(X=np.where(np.arange(12).reshape(6, 2) == 7, np.nan, X), y=y), r"1 of 6 rows .*rows 3"),
    }
    for name, (arrays, words) in cases.items():
        np.savez(tmp_path / name, **arrays)
        with pytest.raises(InputError, match=words) as info:
            load_npz(tmp_path / name)
        assert name in str(info.value), name
    (tmp_path / "text.npz").write_text("not an archive")
    with pytest.raises(InputError, match="not an .npz archive"):
        load_data(tmp_path / "text.npz")
    with pytest.raises(InputError, match="does not exist"):
        load_data(tmp_path / "missing.csv")
    with pytest.raises(InputError, match="neither a .csv nor an .npz"):
        load_data(tmp_path / "data.xlsx")


def test_split_standardise_and_labels():
    from wgflow.data import Dataset

    rng = np.random.default_rng(0)
    ds = Dataset(rng.standard_normal((50, 2)) * [1.0, 10.0] + [3.0, -2.0], rng.integers(0, 2, 50).astype(float) * 5.0)
    train, test = split(ds, 0.2, seed=1)
    assert (train.n, test.n) == (40, 10)
    assert sorted(np.concatenate([train.y, test.y])) == sorted(ds.y)
    train2, test2, mean, std = standardise(train, test)
    np.testing.assert_allclose(train2.X.mean(axis=0), 0, atol=1e-12)
    np.testing.assert_allclose(train2.X.std(axis=0), 1, atol=1e-12)
    np.testing.assert_allclose(test2.X, (test.X - mean) / std)  # the test rows use the training statistics
    y, mapping = classes_to_pm1(ds.y)
    assert mapping == {0.0: -1.0, 5.0: 1.0} and set(y) == {-1.0, 1.0}
    with pytest.raises(InputError, match="exactly two classes"):
        classes_to_pm1(np.array([0.0, 1.0, 2.0]))
    assert split(ds, 0.0)[1] is None
