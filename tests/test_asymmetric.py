"""Asymmetric evaluation (issue 28): a student's queries, or its exported file's, against a gallery
another model embedded, with the projection and centre the student's training recorded."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import make_shapes_dataset, run_cli, tiny_train_args

from mobile_distill.asymmetric import Bridge, asymmetric_metrics, bridge_from_checkpoint, evaluate_asymmetric
from mobile_distill.checkpoint import load_checkpoint
from mobile_distill.errors import ConfigError


def _brute_force(queries, gallery, labels, bridge, ks):
    """One query at a time, in plain Python: project the query, centre the gallery, rank every
    other item; an other-class item at least as similar as the nearest positive counts against
    the query (ties included); AP@R over the R nearest."""
    q = [F.normalize(v, dim=0) for v in queries]
    q = [F.normalize(bridge.projection @ v, dim=0) for v in q] if bridge.projection is not None else q
    g = [F.normalize(v, dim=0) for v in gallery]
    g = [F.normalize(v - bridge.centre, dim=0) for v in g] if bridge.centre is not None else g
    n = len(labels)
    hits, aps = {k: 0 for k in ks}, []
    for i in range(n):
        sims = [(float(q[i] @ g[j]), j) for j in range(n) if j != i]
        positives = [s for s, j in sims if labels[j] == labels[i]]
        best = max(positives)
        ahead = sum(1 for s, j in sims if labels[j] != labels[i] and s >= best)
        for k in ks:
            hits[k] += ahead < k
        r = len(positives)
        ranked = sorted(sims, key=lambda t: -t[0])[:r]
        found, ap = 0, 0.0
        for rank, (_, j) in enumerate(ranked, 1):
            if labels[j] == labels[i]:
                found += 1
                ap += found / rank
        aps.append(ap / r)
    return {f"recall@{k}": hits[k] / n for k in ks}, sum(aps) / n


def test_asymmetric_metrics_equal_a_brute_force_loop():
    g = torch.Generator().manual_seed(0)
    labels = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3])
    queries, gallery = torch.randn(12, 5, generator=g), torch.randn(12, 7, generator=g)
    bridge = Bridge(projection=torch.randn(7, 5, generator=g), centre=0.3 * F.normalize(torch.randn(7, generator=g), dim=0))
    ks = (1, 2, 4)
    got = asymmetric_metrics(queries, gallery, labels, bridge, ks)
    recalls, map_r = _brute_force(queries, gallery, labels, bridge, ks)
    for key, value in recalls.items():
        assert got[key] == pytest.approx(value), key
    assert got["map@r"] == pytest.approx(map_r)
    assert 0 < got["recall@1"] < 1  # neither trivial nor empty

    # A tie: item 4 (class 1) made identical to item 1 (query 0's positive) in the gallery, and
    # query 0 the same vector: its nearest positive ties with an other-class item, which counts
    # against it (plain bridge, one space).
    plain = Bridge()
    tied = gallery.clone()
    tied[4] = tied[1]
    queries_tied = tied.clone() + 0.5 * torch.randn(12, 7, generator=g)
    queries_tied[0] = tied[1]
    got = asymmetric_metrics(queries_tied, tied, labels, plain, ks)
    recalls, map_r = _brute_force(queries_tied, tied, labels, plain, ks)
    assert got["recall@1"] == pytest.approx(recalls["recall@1"]) and got["recall@2"] == pytest.approx(recalls["recall@2"])
    q0, gal = plain.queries(queries_tied)[0], plain.gallery(tied)
    assert float(q0 @ gal[1]) == float(q0 @ gal[4]) == max(float(q0 @ gal[j]) for j in range(1, 12))  # a real tie at the top


def test_sizes_no_projection_joins_are_refused_in_one_line():
    labels = torch.tensor([0, 0, 1, 1])
    with pytest.raises(ConfigError, match="embeds 5 numbers and the gallery model 7; no recorded projection joins them"):
        asymmetric_metrics(torch.randn(4, 5), torch.randn(4, 7), labels, Bridge())


@pytest.fixture(scope="module")
def distilled(tmp_path_factory):
    """A ResNet teacher (32 numbers) and a ResNet student (16) distilled with the centred
    absolute loss: its checkpoint records a 32x16 projection and a centre."""
    root = tmp_path_factory.mktemp("asym")
    shapes = make_shapes_dataset(root / "shapes")
    run_cli("train", *tiny_train_args(shapes, root / "teacher", model="resnet18", **{"embedding-dim": 32}))
    teacher = root / "teacher" / "tiny" / "last.pt"
    run_cli("train", *tiny_train_args(shapes, root / "student", name="student", teacher=str(teacher),
                                      model="resnet18", distill="absolute:1:center=true",
                                      **{"teacher-image-size": 32, "epochs": 12}))
    return shapes, teacher, root / "student" / "student"


def test_eval_against_the_teacher_gallery_matches_training_and_the_exported_file(distilled, tmp_path):
    shapes, teacher, run = distilled
    ckpt = load_checkpoint(run / "last.pt")
    bridge = bridge_from_checkpoint(ckpt)
    assert tuple(bridge.projection.shape) == (32, 16) and bridge.centre.shape == (32,)
    result = evaluate_asymmetric(run / "last.pt", str(teacher))
    trained = json.loads((run / "results.json").read_text())["test"]
    assert result["asymmetric"]["recall@1"] == pytest.approx(trained["asymmetric/recall@1"], abs=1 / 24 + 1e-9)
    assert result["query"]["recall@1"] == pytest.approx(trained["recall@1"], abs=1 / 24 + 1e-9)
    assert 0 < result["asymmetric"]["recall@1"] < 1  # a figure two code paths can disagree on
    assert result["bridge"] == "projection (16, 32), centred gallery"

    run_cli("export", str(run / "last.pt"), "--format", "onnx", "--out", str(tmp_path / "export"), "--parity-samples", "0",
            "--quiet")
    proc = run_cli("eval", str(tmp_path / "export" / "student_float32.onnx"), "--gallery-model", str(teacher),
                   "--json", str(tmp_path / "asym.json"))
    from_file = json.loads((tmp_path / "asym.json").read_text())
    assert "(asymmetric)" in proc.stdout and "bridge: projection (16, 32), centred gallery" in proc.stdout
    for key in ("recall@1", "recall@4", "map@r"):  # the phone's file against the server's model
        assert from_file["asymmetric"][key] == pytest.approx(result["asymmetric"][key], abs=1 / 24 + 1e-9)


def test_gallery_model_refusals_are_one_line(distilled, tmp_path):
    shapes, teacher, run = distilled
    other = tmp_path / "other"  # a second teacher of another size, which the student never met
    run_cli("train", *tiny_train_args(shapes, other, model="mobilenet_v1_025", **{"embedding-dim": 24, "epochs": 1}))
    proc = run_cli("eval", str(run / "last.pt"), "--gallery-model", str(other / "tiny" / "last.pt"), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "embeds 16 numbers (projected to 32 for the teacher it was distilled from)" in proc.stderr, proc.stderr
    assert "24; no recorded projection joins them" in proc.stderr
    proc = run_cli("eval", "--gallery-model", str(teacher), check=False)
    assert proc.returncode == 2 and "give exactly one of CHECKPOINT" in proc.stderr
