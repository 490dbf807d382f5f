"""Asymmetric evaluation (issue 28): a student's queries, or its exported file's, against a gallery
another model embedded, with the projection and centre the student's training recorded."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from conftest import make_shapes_dataset, run_cli, tiny_train_args

from mobile_distill.asymmetric import Bridge, asymmetric_metrics, bridge_from_checkpoint
from mobile_distill.asymmetric_eval import evaluate_asymmetric
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


@pytest.mark.slow
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
    # the file on its own gallery, over the whole split, in ONNX Runtime
    proc = run_cli("eval", str(tmp_path / "export" / "student_float32.onnx"), "--json", str(tmp_path / "sym.json"))
    own = json.loads((tmp_path / "sym.json").read_text())
    assert "Traceback" not in proc.stderr and "embedding 24 queries with student_float32.onnx" in proc.stderr
    for key in ("recall@1", "recall@4", "map@r"):
        assert own[key] == pytest.approx(result["query"][key], abs=1 / 24 + 1e-9)
    assert own["num_queries"] == 24


@pytest.mark.slow
def test_an_exported_file_is_evaluated_away_from_its_checkpoint(distilled, tmp_path):
    """The file's embedded card carries its data set and index centre: a file handed over alone is
    evaluated as in place. A query projection lives only in the checkpoint: then a missing or
    changed checkpoint is refused in one line, and only for the asymmetric figures."""
    shapes, teacher, run = distilled
    centred = tmp_path / "centred"  # the teacher's size: no projection, a centre
    run_cli("train", *tiny_train_args(shapes, centred, teacher=str(teacher), model="resnet18", distill="absolute:1:center=true",
                                      **{"teacher-image-size": 32, "embedding-dim": 32, "epochs": 12}))  # 3: collapsed on AVX2
    alone = tmp_path / "handed" / "over"  # not a sibling of the exports: their relative path to the checkpoint fails
    alone.mkdir(parents=True)
    for student, name in ((centred / "tiny" / "last.pt", "centred"), (run / "last.pt", "projected")):
        run_cli("export", str(student), "--format", "onnx", "--out", str(tmp_path / name), "--parity-samples", "0", "--quiet")
        (tmp_path / name / "student_float32.onnx").rename(alone / f"{name}.onnx")
    in_place = evaluate_asymmetric(centred / "tiny" / "last.pt", str(teacher))
    assert in_place["bridge"] == "centred gallery"
    away = evaluate_asymmetric(alone / "centred.onnx", str(teacher))
    assert away["bridge"] == "centred gallery"
    for key in ("recall@1", "recall@4", "map@r"):
        assert away["asymmetric"][key] == pytest.approx(in_place["asymmetric"][key], abs=1 / 24 + 1e-9)

    proc = run_cli("eval", str(alone / "projected.onnx"), "--json", str(tmp_path / "sym.json"))
    assert json.loads((tmp_path / "sym.json").read_text())["num_queries"] == 24
    proc = run_cli("eval", str(alone / "projected.onnx"), "--gallery-model", str(teacher), check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "projected.onnx maps its queries to the teacher's space with a (32, 16) projection that only its " \
           "checkpoint holds, and" in proc.stderr and "is not there: put last.pt back at that path" in proc.stderr
    # in place, but its checkpoint trained on since the export
    (alone / "projected.onnx").rename(tmp_path / "projected" / "student_float32.onnx")
    source = json.loads((tmp_path / "projected" / "model.json").read_text())["model"]["source_checkpoint"]
    target = (tmp_path / "projected" / source["path"]).resolve()
    assert target == (run / "last.pt").resolve()
    original = target.read_bytes()
    try:
        ckpt = load_checkpoint(target)
        torch.save({**ckpt, "epoch": ckpt["epoch"] + 1}, target)
        with pytest.raises(ConfigError, match="has changed since the export"):
            evaluate_asymmetric(tmp_path / "projected" / "student_float32.onnx", str(teacher))
    finally:
        target.write_bytes(original)


@pytest.mark.slow
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


# ---------------------------------------------------------------- the gate of a compatible student


def test_gate_checks_the_teacher_gallery_drop_that_the_other_figures_miss():
    """An int8-like file whose queries all gained one common offset: its own search and its search
    of the PyTorch gallery rank exactly as PyTorch does (the other figures pass), but against a
    teacher gallery whose class-1 images lean towards that offset, its class-0 queries go wrong."""
    import numpy as np

    from mobile_distill.export.parity import ServerGallery, gate

    g = torch.Generator().manual_seed(0)
    labels = np.array([0] * 4 + [1] * 4)
    e = torch.eye(4)
    noise = 0.05 * torch.randn(8, 4, generator=g) * torch.tensor([1.0, 1.0, 0.0, 1.0])  # none along e2
    reference = F.normalize(torch.cat([e[0].expand(4, 4), e[1].expand(4, 4)]) + noise, dim=1)
    exported = F.normalize(reference + 3 * e[2], dim=1)
    teacher = torch.cat([e[0].expand(4, 4), F.normalize(e[1] + 2 * e[2], dim=0).expand(4, 4)]) + noise
    server = ServerGallery(teacher, Bridge(), "teacher.pt")
    plain = gate(reference.numpy(), exported.numpy(), labels, "int8")
    served = gate(reference.numpy(), exported.numpy(), labels, "int8", server=server)
    assert plain.passed and plain.figures["recall@1_drop"] == 0 and plain.figures["asymmetric_recall@1_drop"] == 0
    assert served.figures["teacher_gallery_recall@1_pytorch"] == 100.0
    assert served.figures["teacher_gallery_recall@1"] == 50.0  # every class-0 query finds a class-1 image
    assert served.failures == ["Recall@1 drop against the teacher's gallery (the server's index this compatible "
                               "student searches) 50.00 points > 1.0"]
    fp32 = gate(reference.numpy(), exported.numpy(), labels, "float32", server=server)  # float32 gates on cosine
    assert len(fp32.failures) == 1 and fp32.failures[0].startswith("cosine min")


@pytest.fixture(scope="module")
def compatible(tmp_path_factory):
    """A student trained with --compatible (contrastive against its teacher's embeddings), of the
    teacher's embedding size."""
    root = tmp_path_factory.mktemp("compat")
    shapes = make_shapes_dataset(root / "shapes")
    run_cli("train", *tiny_train_args(shapes, root / "teacher", model="resnet18", **{"embedding-dim": 32}))
    teacher = root / "teacher" / "tiny" / "last.pt"
    args = tiny_train_args(shapes, root / "student", name="student", teacher=str(teacher), model="resnet18",
                           **{"teacher-image-size": 32, "epochs": 12, "embedding-dim": 32})  # the app needs no projection
    run_cli("train", *args, "--distill", "contrastive:1:queue=32", "--distill", "absolute:1", "--compatible")
    return teacher, root / "student" / "student" / "last.pt"


@pytest.mark.slow
def test_export_of_a_compatible_student_gates_its_search_of_the_teacher_gallery(compatible, tmp_path):
    teacher, student = compatible
    out = tmp_path / "export"
    proc = run_cli("export", str(student), "--format", "onnx", "--format", "tflite", "--precision", "onnx:float32",
                   "--precision", "tflite:int8", "--out", str(out), "--parity-samples", "0")
    report = json.loads((out / "export_report.json").read_text())
    assert report["teacher_gallery"] == str(teacher)
    direct = evaluate_asymmetric(student, str(teacher))["asymmetric"]["recall@1"]  # every test image, as the gate
    assert report["teacher_gallery_recall@1_pytorch"] == pytest.approx(100 * direct, abs=1e-6)
    for row in report["rows"]:
        p = row["parity"]
        assert p["teacher_gallery_recall@1_drop"] == pytest.approx(
            p["teacher_gallery_recall@1_pytorch"] - p["teacher_gallery_recall@1"])
    assert "R@1 teacher gallery" in proc.stdout and f"against {teacher}'s embeddings" in proc.stdout
    # verify gates the handed-over file on the same search again, with the same figures
    int8 = min((r for r in report["rows"] if r["status"] == "passed"), key=lambda r: r["precision"] != "int8")
    again = run_cli("verify", str(out / int8["file"]), "--parity-samples", "0")
    assert "R@1 teacher gallery" in again.stdout
    from mobile_distill.export.verify import verify

    checked = verify(out / int8["file"], parity_samples=0)
    assert checked["teacher_gallery"] == str(teacher) and checked["passed"]
    assert checked["rows"][0]["parity"]["teacher_gallery_recall@1"] == pytest.approx(
        int8["parity"]["teacher_gallery_recall@1"])
    assert "teacher_gallery" not in verify(out / int8["file"], parity_samples=0, teacher_gallery="off")
    off = run_cli("export", str(student), "--format", "onnx", "--out", str(tmp_path / "off"), "--parity-samples", "0",
                  "--teacher-gallery", "off", "--quiet")
    assert "teacher gallery" not in off.stdout
    assert "teacher_gallery" not in json.loads((tmp_path / "off" / "export_report.json").read_text())


@pytest.mark.slow
def test_the_mixed_precision_search_of_a_compatible_student_is_gated_on_the_teachers_gallery(compatible, tmp_path):
    """The final gate checks the drop against the teacher's gallery, so the search that picks the
    mix does too, on its own images embedded by the teacher (here no file can pass: a Recall@1 drop
    of -1000 points is asked for, so the search runs to its end)."""
    from mobile_distill.export import export
    from mobile_distill.export.config import Thresholds

    teacher, student = compatible
    report = export(student, formats=["tflite"], precisions={"tflite": ["int8"]}, out_dir=tmp_path / "x",
                    parity_samples=16, calib_samples=16, thresholds=Thresholds(int8_recall_drop=-1000.0),
                    raise_on_failure=False)
    row = report["rows"][0]
    assert row["status"] == "failed" and row["details"].get("mixed_search"), (row["status"], row["failures"])
    assert row["details"]["probe"].endswith("(and the teacher's gallery of them)"), row["details"]["probe"]
    assert not any("search failed" in f for f in row["failures"]), row["failures"]  # it ran, and found nothing
    assert row["failures"] == [f"mixed precision: no mix with at most half the weights in float passed the gate (at half "
                               f"its allowed loss) on {row['details']['probe'].split(' (')[0]} and then the gate itself "
                               f"(tried {len(row['details']['mixed_search'])}; the gate refused 0 that passed the search)"]


@pytest.mark.slow
def test_a_compatible_student_without_its_teacher_is_refused_before_anything_is_written(compatible, tmp_path):
    teacher, student = compatible
    moved = tmp_path / "elsewhere.pt"
    teacher.rename(moved)
    try:
        proc = run_cli("export", str(student), "--format", "onnx", "--out", str(tmp_path / "x"), check=False)
        assert proc.returncode == 1 and "Traceback" not in proc.stderr
        assert f"its teacher {teacher} is not there: pass --teacher-gallery PATH" in proc.stderr, proc.stderr
        assert not (tmp_path / "x").exists()
        ok = run_cli("export", str(student), "--format", "onnx", "--out", str(tmp_path / "y"), "--parity-samples", "0",
                     "--teacher-gallery", str(moved), "--quiet")
        assert json.loads((tmp_path / "y" / "export_report.json").read_text())["teacher_gallery"] == str(moved)
        assert "R@1 teacher gallery" in ok.stdout
    finally:
        moved.rename(teacher)


def test_compatible_needs_a_loss_that_ties_the_spaces():
    from mobile_distill.config import make_config

    with pytest.raises(ConfigError, match="--compatible needs a loss that ties"):
        make_config(teacher="t.pt", distill=["relative:1"], compatible=True)


@pytest.mark.slow
def test_android_assets_with_a_teacher_embedded_gallery(compatible, tmp_path):
    """The app's gallery as the server's index: the teacher's embeddings of the original images
    (at the teacher's size), and gallery.json says who embedded it."""
    import numpy as np

    from mobile_distill.export.android import gallery_samples
    from mobile_distill.export.api import embed
    from mobile_distill.export.prepare import load_images
    from mobile_distill.teacher_sources import load_teacher

    teacher, student = compatible
    assets = tmp_path / "assets"
    proc = run_cli("export", str(student), "--format", "tflite", "--precision", "tflite:float32", "--out",
                   str(tmp_path / "exp"), "--parity-samples", "0", "--android", str(assets), "--gallery-model", "teacher",
                   "--quiet")
    assert f"gallery images embedded by the teacher {teacher} in" in proc.stdout, proc.stdout
    gallery = json.loads((assets / "gallery.json").read_text())
    assert gallery["embedding"] == {"kind": "teacher", "model": str(teacher), "centred": False}
    card = json.loads((assets / "model.json").read_text())["model"]
    assert card["teacher_index"]["compatible"] is True and card["teacher_index"]["gallery_centre"] is None
    rows = np.fromfile(assets / "gallery_embeddings.f32", dtype="<f4").reshape(gallery["count"], gallery["dim"])
    samples, source = gallery_samples(card["dataset"]["spec"])
    assert gallery["count"] == len(samples) > 8
    expected = embed(load_teacher(str(teacher)).model, load_images([(p, 0) for p, _ in samples], 32, source))
    np.testing.assert_allclose(rows, expected / np.linalg.norm(expected, axis=1, keepdims=True), atol=1e-6)

    # a model that never had a teacher (here the teacher itself) has no server index to search
    proc = run_cli("export", str(teacher), "--format", "tflite", "--precision", "tflite:float32",
                   "--out", str(tmp_path / "exp2"), "--parity-samples", "0", "--android", str(tmp_path / "a2"),
                   "--gallery-model", "teacher", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "was not distilled from a teacher, so its queries cannot search a teacher's index" in proc.stderr


@pytest.mark.slow
def test_android_teacher_gallery_refuses_a_student_that_needs_a_projection(distilled, tmp_path):
    shapes, teacher, run = distilled  # 16 numbers against the teacher's 32
    proc = run_cli("export", str(run / "last.pt"), "--format", "tflite", "--precision", "tflite:float32", "--out",
                   str(tmp_path / "exp"), "--parity-samples", "0", "--android", str(tmp_path / "assets"),
                   "--gallery-model", "teacher", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "through a train-time projection [32, 16], which the app does not apply" in proc.stderr, proc.stderr
    assert not (tmp_path / "assets").exists() and not (tmp_path / "exp").exists()  # refused before the export


@pytest.mark.slow
def test_a_student_starts_from_its_teachers_weights_at_its_own_size(compatible, tmp_path):
    """``init_from: teacher`` (the compatible recipe's start): the teacher's weights, the student's
    input size; another architecture or embedding size, or no teacher file, is refused in one line."""
    from mobile_distill.config import make_config
    from mobile_distill.train import initial_model

    teacher, _ = compatible
    common = dict(teacher=str(teacher), distill=["contrastive:1"], init_from="teacher", embedding_dim=32)
    net = initial_model(make_config(**common, model="resnet18", image_size=24))
    assert net.image_size == 24
    expected = load_checkpoint(teacher)["state_dict"]
    got = net.state_dict()
    assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected)
    for other in (dict(model="mobilenet_v1_025"), dict(model="resnet18", embedding_dim=16)):
        with pytest.raises(ConfigError, match="same model and embedding size"):
            initial_model(make_config(**{**common, **other}))
    with pytest.raises(ConfigError, match="init_from: teacher starts the student"):
        make_config(**{**common, "teacher": str(tmp_path / "gone.pt")})
