"""The learned head's arrays, file and transform (:mod:`mess.models.head`), on hand-made heads: no training, no
extraction, so these run in a second."""

from __future__ import annotations

from dataclasses import FrozenInstanceError
from pathlib import Path

import numpy as np
import pytest

from mess.models.head import Head, HeadError, shipped_head


def test_a_head_refuses_arrays_that_do_not_fit_and_round_trips_its_residual_layer(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    names, dims, d = ("a", "b"), (3, 2), 4
    arrays = {"mean": rng.normal(size=5), "scale": rng.uniform(0.5, 2, 5), "proj": rng.normal(size=(5, d))}
    mlp = {"w1": rng.normal(size=(d, 6)), "b1": rng.normal(size=6), "w2": rng.normal(size=(6, d))}
    bad = [
        (("a",), dims, arrays),  # one name, two sizes
        (names, dims, {**arrays, "mean": np.zeros(4)}),
        (names, dims, {**arrays, "scale": np.ones(6)}),
        (names, dims, {**arrays, "proj": np.zeros((4, d))}),
        (names, dims, {**arrays, "w1": mlp["w1"]}),
        (names, dims, {**arrays, "w1": mlp["w1"], "b1": mlp["b1"]}),
        (names, dims, {**arrays, "w1": mlp["w1"], "w2": mlp["w2"]}),
        (names, dims, {**arrays, "b1": mlp["b1"], "w2": mlp["w2"]}),
    ]
    for bad_names, bad_dims, fields in bad:
        with pytest.raises(HeadError):
            Head("m", bad_names, bad_dims, **fields)
    head = Head("m", names, dims, **arrays, **mlp, meta={"method": "learned"})
    assert head.dim == d
    x = rng.normal(size=(7, 5))
    h = (x - arrays["mean"]) / arrays["scale"] @ arrays["proj"]  # the module docstring's y = h + relu(h w1 + b1) w2
    want = h + np.maximum(h @ mlp["w1"] + mlp["b1"], 0) @ mlp["w2"]
    np.testing.assert_allclose(head.transform(x), want, rtol=1e-4, atol=1e-4)
    assert head.transform(x[0]).shape == (1, d)
    linear = Head("m", names, dims, **arrays)
    np.testing.assert_allclose(linear.transform(x), h, rtol=1e-4, atol=1e-4)
    again = Head.load(head.save(tmp_path / "deep" / "er" / "h.npz"))  # its folders made
    assert again.meta == {"method": "learned"} and (again.model, again.layer_names, again.layer_dims) == (
        "m", names, dims)
    np.testing.assert_allclose(again.transform(x), want, rtol=1e-4, atol=1e-4)
    assert Head.load(linear.save(tmp_path / "linear.npz")).w1 is None
    again.check("m", names, dims)
    with pytest.raises(FrozenInstanceError):  # shipped heads are cached and shared: none may be altered
        again.proj = np.eye(5)  # type: ignore[misc]
    for model, other_names, other_dims in (("n", names, dims), ("m", ("a", "c"), dims), ("m", names, (2, 3))):
        with pytest.raises(HeadError, match="trained on m layers"):
            again.check(model, other_names, other_dims)
    (tmp_path / "junk.npz").write_bytes(b"not an npz")
    np.savez(tmp_path / "no_info.npz", **arrays)
    for path in (tmp_path / "junk.npz", tmp_path / "no_info.npz", tmp_path / "missing.npz"):
        with pytest.raises(HeadError, match="cannot read learned head"):
            Head.load(path)
    with pytest.raises(HeadError, match="no learned head for no-such-model; heads ship for musicnn-msd"):
        shipped_head("no-such-model")
