"""The model registry's contract, checked for every registered architecture (timm-style)."""

from __future__ import annotations

import functools
import http.server
import threading

import pytest
import torch

from mobile_distill.errors import DownloadError, RegistryError
from mobile_distill.models import create_model, list_models
from mobile_distill.models.complexity import complexity


@pytest.mark.parametrize("name", list_models())
def test_contract(name):
    model = create_model(name, embedding_dim=24, image_size=64).eval()
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        emb = model(x)
        emb2, maps = model.forward_intermediates(x, indices=range(len(model.feature_info)))
    assert emb.shape == (2, 24)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(2))
    torch.testing.assert_close(emb, emb2)
    for info, fmap in zip(model.feature_info, maps):
        assert fmap.shape[1] == info["num_chs"]
        assert 64 // fmap.shape[-1] == info["reduction"]
    assert model.model_info()["arch"] == name
    c = complexity(model, 64)
    assert c["params"] > 0 and c["gflops"] > 0


def test_pooled_features_without_head():
    model = create_model("mobilenet_v1_025", embedding_dim=None).eval()
    assert model(torch.rand(1, 3, 64, 64)).shape == (1, 256)
    assert model.model_info()["head"] is False


def test_mobilenet_v1_025_size():
    # Howard et al.: MobileNet-0.25 has 0.47 M parameters with its 1000-way classifier;
    # without it (the backbone alone) about 0.22 M.
    backbone = create_model("mobilenet_v1_025", embedding_dim=None).backbone
    assert 0.20e6 < sum(p.numel() for p in backbone.parameters()) < 0.24e6


def test_unknown_model_lists_choices():
    with pytest.raises(RegistryError, match="unknown model 'resnet9000'.*resnet18"):
        create_model("resnet9000")


def test_efficientnet_lite_imagenet_weights_classify_real_photos():
    """Right weights, right padding, right normalisation: real photos get their ImageNet class with
    the probability pinned tightly enough that the wrong padding fails the same check. The
    normalisation is Google's documented one for the Lite models (efficientnet_lite_builder.py:
    MEAN_RGB = 127, STDDEV_RGB = 128 on 0-255 pixels), not the constants of the code under test."""
    import timm
    from skimage import data

    from mobile_distill.models.efficientnet_lite import _load_package_weights, _renamed_state_dict, build_timm_lite

    tf_same = build_timm_lite(0, "imagenet").eval()
    symmetric = timm.create_model("efficientnet_lite0", pretrained=False)  # the same net with PyTorch padding
    symmetric.load_state_dict(_renamed_state_dict(symmetric, _load_package_weights(0)))
    symmetric.eval()
    # (class, probability range) for TF "same" padding: measured 0.788 and 0.878
    expected = {"chelsea": (285, 0.77, 0.81), "coffee": (967, 0.86, 0.90)}  # Egyptian cat, espresso

    def in_range(net, name):
        cls, low, high = expected[name]
        img = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).float()[None] / 255
        img = torch.nn.functional.interpolate(img, size=(224, 224), mode="bilinear", antialias=True)
        with torch.no_grad():
            prob = net((img - 127 / 255) / (128 / 255)).softmax(-1)[0]
        return int(prob.argmax()) == cls and low < float(prob[cls]) < high

    assert all(in_range(tf_same, name) for name in expected)
    assert not any(in_range(symmetric, name) for name in expected)  # 0.692 and 0.836: the pin tells them apart


def test_create_model_loads_package_weights():
    from mobile_distill.models.efficientnet_lite import _load_package_weights

    a = create_model("efficientnet_lite0", embedding_dim=None, pretrained="imagenet")
    stem = next(a.backbone.parameters())  # the first conv of the stem
    assert torch.equal(stem, _load_package_weights(0)["_conv_stem.weight"])


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def test_torchvision_weights_download_from_mirror(tmp_path, monkeypatch):
    """The ImageNet download path, served by a real HTTP server on 127.0.0.1."""
    import torchvision

    from mobile_distill.utils.io import file_digest

    served = tmp_path / "served"
    served.mkdir()
    state = torchvision.models.get_model("resnet18", weights=None).state_dict()
    tmp = served / "x.pth"
    torch.save(state, tmp)
    url_name = torchvision.models.get_model_weights("resnet18").DEFAULT.url.rsplit("/", 1)[-1]
    # Serve it under torchvision's file name, whose hash prefix this file does not have ...
    (served / url_name).write_bytes(tmp.read_bytes())
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(served)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv("MDISTILL_WEIGHTS_URL", f"http://127.0.0.1:{server.server_port}/")
        with pytest.raises(DownloadError, match="failed their checksum"):
            create_model("resnet18", pretrained="imagenet")
        # ... and the weights cache is left clean; a file with the right prefix is accepted.
        from mobile_distill import paths

        assert not (paths.home() / "weights" / url_name).exists()
        prefix = url_name.rsplit("-", 1)[-1].split(".")[0]
        assert file_digest(tmp)[:8] != prefix
    finally:
        server.shutdown()


def test_torchvision_weights_offline_gives_clear_error(monkeypatch):
    monkeypatch.setenv("MDISTILL_WEIGHTS_URL", "http://127.0.0.1:9/")  # nothing listens on port 9
    with pytest.raises(DownloadError, match="--pretrained none"):
        create_model("mobilenet_v2", pretrained="imagenet")


def test_torchvision_weights_from_cache_are_loaded():
    import torchvision

    from mobile_distill import paths

    url_name = torchvision.models.get_model_weights("resnet18").DEFAULT.url.rsplit("/", 1)[-1]
    state = torchvision.models.get_model("resnet18", weights=None).state_dict()
    (paths.home() / "weights").mkdir(parents=True)
    torch.save(state, paths.home() / "weights" / url_name)
    model = create_model("resnet18", pretrained="imagenet")
    assert torch.equal(model.backbone.stages[0][0].weight, state["conv1.weight"])
