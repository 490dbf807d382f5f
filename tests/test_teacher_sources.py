"""Teachers from anywhere (issue 27): an ONNX file, a Python factory, timm and torchvision models
teach a student through the same training loop, cache and losses as our own checkpoints; an opaque
teacher is refused by the losses that need feature maps; bad specs get one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torchvision

from conftest import make_shapes_dataset, run_cli, tiny_train_args

from mobile_distill.checkpoint import load_checkpoint
from mobile_distill.utils.io import file_digest

FACTORY = '''
import torch, torchvision

def resnet():
    net = torchvision.models.resnet18()
    net.load_state_dict(torch.load({weights!r}, weights_only=True))
    net.fc = torch.nn.Identity()
    net.image_size = 32
    return net

def not_a_module():
    return 42

def broken():
    raise ValueError("no GPU here")
'''


@pytest.fixture(scope="module")
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp("data") / "shapes")


@pytest.fixture(scope="module")
def resnet(tmp_path_factory):
    """A torchvision ResNet-18 built here (random weights, BatchNorm statistics from a few batches so
    its features are not degenerate), as a weights file, an ONNX file and a py: factory module."""
    root = tmp_path_factory.mktemp("resnet")
    torch.manual_seed(0)
    net = torchvision.models.resnet18()
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.rand(16, 3, 32, 32))
    net.eval()
    torch.save(net.state_dict(), root / "resnet18.pth")
    net.fc = torch.nn.Identity()
    torch.onnx.export(net, (torch.rand(1, 3, 32, 32),), root / "resnet18.onnx", input_names=["images"],
                      output_names=["features"], dynamic_axes={"images": {0: "batch"}}, dynamo=False)
    (root / "my_teachers.py").write_text(FACTORY.format(weights=str(root / "resnet18.pth")))
    return root


def _distil(shapes, out, teacher, *distill, name="student", cwd=None, **extra):
    args = tiny_train_args(shapes, out, name=name, **{"epochs": 1, "teacher-view": "clean", **extra})
    args += ["--teacher", str(teacher), "--teacher-cache"]
    for d in distill:
        args += ["--distill", d]
    return args


@pytest.mark.slow
def test_an_onnx_teacher_and_the_same_net_as_a_factory_give_the_same_cache(shapes, resnet, tmp_path, monkeypatch):
    monkeypatch.chdir(resnet)  # py:my_teachers:resnet imports from the working directory, as python -m does
    run_cli("train", *_distil(shapes, tmp_path, resnet / "resnet18.onnx", "absolute:1", name="onnx"))
    run_cli("train", *_distil(shapes, tmp_path, "py:my_teachers:resnet", "absolute:1", name="factory"))
    caches = [np.load(next((tmp_path / n).glob("teacher_cache-*.npy"))) for n in ("onnx", "factory")]
    assert caches[0].shape == caches[1].shape == (len(list(shapes.rglob("*.png"))) // 2, 512)
    assert np.abs(caches[0] - caches[1]).max() < 1e-4  # ONNX Runtime vs PyTorch, same weights, same contract
    assert np.linalg.norm(caches[0], axis=1) == pytest.approx(1.0, abs=1e-5)  # L2-normalised pooled features
    onnx_run, factory_run = (load_checkpoint(tmp_path / n / "last.pt") for n in ("onnx", "factory"))
    assert onnx_run["teacher"]["source"] == "onnx"
    assert onnx_run["teacher"]["sha256"] == file_digest(resnet / "resnet18.onnx")
    assert onnx_run["teacher"]["contract"]["image_size"] == 32
    assert factory_run["teacher"]["source"] == "python" and factory_run["teacher"]["embedding_dim"] == 512
    # the student was taught through the absolute loss's 16 -> 512 projection (trained with it)
    projection = [v for k, v in onnx_run["objective"].items() if k.endswith("projection.weight")]
    assert [tuple(v.shape) for v in projection] == [(512, 16)]
    losses = [float(r.split(",")[1]) for r in (tmp_path / "onnx" / "metrics.csv").read_text().splitlines()[1:]]
    assert losses and all(np.isfinite(losses))


def test_an_opaque_teacher_is_refused_by_the_feature_map_losses(shapes, resnet, tmp_path):
    proc = run_cli("train", *_distil(shapes, tmp_path, resnet / "resnet18.onnx", "hint:1",
                                     **{"teacher-view": "augmented"}), check=False)
    assert proc.returncode == 1 and "hint:1" in proc.stderr and "onnx teacher is opaque" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "student").exists()


@pytest.mark.slow
@pytest.mark.parametrize("spec,message", [
    ("py:my_teachers:not_a_module", "returned int, not a torch.nn.Module"),
    ("py:my_teachers:broken", "failed: ValueError: no GPU here"),
    ("py:no_such_module:f", "No module named 'no_such_module'"),
    ("timm:test_efficientnett", "close names: test_efficientnet"),
    ("tv:resnet19", "close names: resnet18"),
])
def test_a_bad_teacher_spec_gets_one_line(shapes, resnet, tmp_path, monkeypatch, spec, message):
    monkeypatch.chdir(resnet)
    proc = run_cli("train", *_distil(shapes, tmp_path, spec, "absolute:1"), check=False)
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr[-800:]
    assert "Traceback" not in proc.stderr and not (tmp_path / "student").exists()


def test_an_onnx_teacher_of_a_fixed_size_names_both_shapes(shapes, resnet, tmp_path):
    proc = run_cli("train", *_distil(shapes, tmp_path, resnet / "resnet18.onnx", "absolute:1",
                                     **{"teacher-image-size": 48}), check=False)
    assert proc.returncode == 1 and "fixed at 32x32" in proc.stderr and "48x48" in proc.stderr


@pytest.fixture(scope="module")
def timm_weights(tmp_path_factory):
    import timm

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("timm") / "test_efficientnet.pth"
    torch.save(timm.create_model("test_efficientnet", pretrained=False).state_dict(), path)
    return path


@pytest.mark.slow
@pytest.mark.parametrize("distill", ["hint:1", "absolute:1"])
def test_a_timm_teacher_teaches_with_maps_and_across_embedding_sizes(shapes, timm_weights, tmp_path, distill):
    """test_efficientnet (timm's own test model: 256-d pre-logits) teaches a 16-d MobileNet: the hint
    loss reads its stage maps through timm's forward_intermediates; absolute projects 16 -> 256."""
    args = tiny_train_args(shapes, tmp_path, name="student", epochs=1) + [
        "--teacher", "timm:test_efficientnet", "--teacher-weights", str(timm_weights), "--distill", distill,
        "--teacher-image-size", "32"]
    run_cli("train", *args)
    ckpt = load_checkpoint(tmp_path / "student" / "last.pt")
    record = ckpt["teacher"]
    assert record["source"] == "timm" and record["embedding_dim"] == 256
    assert record["sha256"] == file_digest(timm_weights)
    assert record["contract"]["mean"] == pytest.approx([0.485, 0.456, 0.406])  # from timm's pretrained_cfg
    assert record["contract"]["interpolation"] == "bicubic"
    header = (tmp_path / "student" / "metrics.csv").read_text().splitlines()[0]
    assert distill.split(":")[0] in header


def test_timm_weights_that_do_not_fit_name_the_keys(shapes, resnet, tmp_path):
    args = tiny_train_args(shapes, tmp_path, name="student", epochs=1) + [
        "--teacher", "timm:test_efficientnet", "--teacher-weights", str(resnet / "resnet18.pth"), "--distill", "absolute:1"]
    proc = run_cli("train", *args, check=False)
    assert proc.returncode == 1 and "missing keys ['conv_stem.weight'" in proc.stderr and "unexpected keys ['conv1.weight'" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "student").exists()


def test_a_timm_teacher_without_weights_offline_says_how(shapes, tmp_path):
    args = tiny_train_args(shapes, tmp_path, name="student", epochs=1) + [
        "--teacher", "timm:test_efficientnet", "--distill", "absolute:1"]
    proc = run_cli("train", *args, check=False, env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 1 and "could not fetch timm weights for test_efficientnet" in proc.stderr
    assert "--teacher-weights FILE" in proc.stderr and "Traceback" not in proc.stderr


def test_a_torchvision_teacher_teaches_with_its_maps(shapes, resnet, tmp_path):
    args = tiny_train_args(shapes, tmp_path, name="student", epochs=1) + [
        "--teacher", "tv:resnet18", "--teacher-weights", str(resnet / "resnet18.pth"), "--distill", "hint:1",
        "--distill", "absolute:1", "--teacher-image-size", "32"]
    run_cli("train", *args)
    record = load_checkpoint(tmp_path / "student" / "last.pt")["teacher"]
    assert record["source"] == "torchvision" and record["embedding_dim"] == 512


@pytest.mark.slow
def test_eval_reports_what_any_teacher_starts_from(shapes, resnet, tmp_path, monkeypatch):
    """`mdistill eval --teacher SPEC`: the untuned Recall@K of a teacher from any source; the ONNX
    file and the factory of the same network score the same."""
    monkeypatch.chdir(resnet)
    scores = {}
    for spec in (resnet / "resnet18.onnx", "py:my_teachers:resnet"):
        out = tmp_path / f"{len(scores)}.json"
        proc = run_cli("eval", "--teacher", spec, "--data", f"folder:{shapes}", "--json", out)
        assert "untuned teacher" in proc.stdout
        scores[str(spec)] = json.loads(out.read_text())
    onnx, factory = scores.values()
    assert onnx["recall@1"] == factory["recall@1"] and onnx["num_queries"] == 24


@pytest.mark.slow
def test_precomputed_embeddings_teach_as_the_cached_teacher_did(shapes, resnet, tmp_path):
    """--teacher-embeddings: the ONNX teacher's clean-view rows, handed over as a file in another
    order with the list of their images, train the same student bit for bit as the teacher did."""
    from mobile_distill.data import create_dataset

    run_cli("train", *_distil(shapes, tmp_path, resnet / "resnet18.onnx", "absolute:1", name="onnx"))
    rows = np.load(next((tmp_path / "onnx").glob("teacher_cache-*.npy")))
    train = [p for p, _ in create_dataset(f"folder:{shapes}").train]
    order = list(reversed(range(len(train))))
    np.save(tmp_path / "rows.npy", rows[order])
    (tmp_path / "images.txt").write_text("\n".join(train[i] for i in order) + "\n")
    given = tiny_train_args(shapes, tmp_path, name="given", epochs=1, **{"teacher-view": "clean"}) + [
        "--teacher-embeddings", tmp_path / "rows.npy", "--teacher-images", tmp_path / "images.txt", "--distill", "absolute:1"]
    run_cli("train", *given)
    a, b = (load_checkpoint(tmp_path / n / "last.pt") for n in ("onnx", "given"))
    assert all(torch.equal(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"])
    assert b["teacher"]["source"] == "embeddings" and b["teacher"]["embedding_dim"] == 512
    # what it cannot do, each in one line: maps, augmented views, an image the list lacks
    for extra, message in ((["--distill", "hint:1"], "embeddings teacher is opaque"),
                           (["--teacher-view", "augmented"], "clean images only")):
        proc = run_cli("train", *given, *extra, "--name", "refused", check=False)
        assert proc.returncode == 1 and message in proc.stderr and "Traceback" not in proc.stderr, proc.stderr[-500:]
    (tmp_path / "images.txt").write_text("\n".join(train[i] for i in order[:-1]) + "\n")
    np.save(tmp_path / "rows.npy", rows[order[:-1]])
    proc = run_cli("train", *given, "--name", "refused", check=False)
    assert proc.returncode == 1 and "lacks 1 of the 24 training images" in proc.stderr
    assert not (tmp_path / "refused").exists()


@pytest.mark.slow
def test_our_own_onnx_export_teaches_as_its_checkpoint_does(tmp_path):
    """A student exported here (normalisation inside the graph, model.json beside it) used as an opaque
    teacher: the ONNX source reads the contract from model.json, feeds [0, 1] images as they are, and
    embeds as the checkpoint does."""
    from conftest import train_tiny_student

    from mobile_distill.teacher_sources import load_teacher

    ckpt = train_tiny_student(tmp_path)
    run_cli("export", ckpt, "--format", "onnx", "--parity-samples", 8, "--out", tmp_path / "export", "--quiet")
    onnx = load_teacher(str(next((tmp_path / "export").glob("*.onnx"))))
    ours = load_teacher(str(ckpt))
    assert onnx.contract.image_size == 32 and onnx.contract.mean == (0.0, 0.0, 0.0) and onnx.opaque
    images = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(onnx.model(images), ours.model(images), atol=1e-4)
