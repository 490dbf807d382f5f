"""The quantised exports' refusal branches fail for real, and mixed precision rescues the file.

Two faults that real networks have, planted in a briefly trained tiny resnet18 without changing
what it computes in float:
- an *outlier activation channel*: the last block's BatchNorm puts +10000 on one channel that the
  head ignores (its weights there are zero). Per-tensor int8 activations (static, and dynamic on
  the fly) spend their whole range on it and round every other feature to zero.
- *tiny weights*: the head's weights scaled to at most 4e-8 (the output is L2-normalised, so
  PyTorch does not notice; the bias is dropped); float16 rounds numbers that small to 0 or 6e-8.
"""

from __future__ import annotations

import json

import pytest
import torch

from conftest import run_cli, train_tiny_student

import litert_torch  # noqa: F401  (part of `make setup`)

from mobile_distill.checkpoint import load_checkpoint, model_from_checkpoint, save_checkpoint
from mobile_distill.export import export


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("quant")
    return {"root": root, "ckpt": train_tiny_student(root)}


def _edited(tiny, name, edit):
    ckpt = load_checkpoint(tiny["ckpt"])
    net = model_from_checkpoint(ckpt).eval()
    with torch.no_grad():
        x = torch.rand(6, 3, 32, 32)
        before = net(x)
        edit(net)
        after = net(x)
    ckpt["state_dict"] = net.state_dict()
    path = tiny["root"] / f"{name}.pt"
    save_checkpoint(path, {k: v for k, v in ckpt.items() if k not in ("format", "version")})
    return path, before, after


def _outlier_channel(net):
    bn = [m for m in net.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)][-1]
    bn.bias[0] += 1e4
    net.head.weight[:, 0] = 0.0


def _tiny_head(net):
    # the largest weight at 4e-8: under one step of float16's subnormals (6e-8), whatever the training;
    # no bias (float16 files keep biases float32, and an exact bias would hide the weights' error)
    net.head.weight.mul_(4e-8 / float(net.head.weight.abs().max()))
    net.head.bias.zero_()


def _row(report, precision):
    return next(r for r in report["rows"] if r["precision"] == precision)


@pytest.fixture(scope="module")
def outlier(tiny):
    path, before, after = _edited(tiny, "outlier", _outlier_channel)
    # the planted channel is invisible in float: only the head's (now zero) column 0 changed
    assert torch.nn.functional.cosine_similarity(before, after).min() > 0.8
    return path


@pytest.fixture(scope="module")
def mixed(outlier, tmp_path_factory):
    """The outlier model exported with the mixed-precision retry (refused files kept for bench);
    the gate takes 4 of the 8 test classes, the search probes the other 4."""
    out = tmp_path_factory.mktemp("mixed") / "export"
    report = export(outlier, formats=["tflite"], out_dir=out, parity_samples=16, calib_samples=32, keep_failed=True,
                    precisions={"tflite": ["float32", "int8", "dynamic_int8"]}, mixed_precision=True,
                    raise_on_failure=False)
    return out, report


@pytest.mark.slow
def test_int8_refusals_are_real(outlier, tmp_path):
    out = tmp_path / "plain"
    report = export(outlier, formats=["tflite"], out_dir=out, parity_samples=0, calib_samples=32,
                    precisions={"tflite": ["float32", "int8", "dynamic_int8", "weight_int8"]}, mixed_precision=False,
                    raise_on_failure=False)
    assert _row(report, "float32")["status"] == "passed"
    assert _row(report, "weight_int8")["status"] == "passed"  # float activations: no per-tensor range to spend
    for precision in ("int8", "dynamic_int8"):
        row = _row(report, precision)
        assert row["status"] == "failed", row["parity"]
        assert any("Recall@1 drop" in f or "agreement" in f for f in row["failures"]), row["failures"]
        assert not (out / row["file"]).exists() and not list(out.glob(f".*{precision}*"))
    card = json.loads((out / "model.json").read_text())
    assert {a["precision"] for a in card["artifacts"]} == {"float32", "weight_int8"}


@pytest.mark.slow
def test_mixed_precision_keeps_the_outlier_path_float_and_passes(mixed):
    out, report = mixed
    f32 = _row(report, "float32")["size_bytes"]
    row = _row(report, "dynamic_int8")
    assert row["status"] == "passed", row["failures"]
    assert row["post_training"]["failures"]  # the all-int8 file failed first
    assert [o["layer"] for o in row["details"]["quantization"]["float_ops"]] == ["head"]
    assert row["details"]["mixed_search"] == [{"float_ops": 1, "float_weight_fraction": pytest.approx(32 * 512 / 11.2e6, rel=0.1),
                                               "passed": True}]
    assert row["details"]["probe"] == "16 images of test classes outside the gate's"
    assert row["details"]["gate_refusals"] == 0
    assert row["size_bytes"] < 0.5 * f32 and (out / row["file"]).is_file()
    from mobile_distill.export.report import format_report

    share = 100 * row["details"]["float_weight_fraction"]
    assert f"dynamic_int8: the all-quantised file failed; mixed precision keeps 1 op(s) in float ({share:.2f} % of the " \
           "weights; chosen on 16 images of test classes outside the gate's; recipe in model.json)" in format_report(report)
    legacy = json.loads(json.dumps(report))  # a report written before the share was recorded
    next(r for r in legacy["rows"] if r["precision"] == "dynamic_int8")["details"].pop("float_weight_fraction")
    assert f"keeps 1 op(s) in float ({share:.2f} % of the weights" in format_report(legacy)
    # the recipe that rebuilds the file is in model.json
    card = json.loads((out / "model.json").read_text())
    mixed = next(a for a in card["artifacts"] if a["precision"] == "dynamic_int8")
    rules = mixed["details"]["quantization"]["recipe"]
    assert any(r["algorithm_key"] == "no_quantize" and "Linear_head" in r["regex"] for r in rules)
    # static int8 quantises every activation: the whole outlier path (the last block's output, the
    # pooling and the head) ranks above every other op; a 32-pixel net trained for seconds then
    # still loses a query or two out of 16, so the search may run out of budget: both are reported
    row = _row(report, "int8")
    top3 = {r["layer"] for r in row["details"]["sensitivity"][:3]}
    assert "head" in top3 and "backbone.4.1.conv2" in top3, row["details"]["sensitivity"][:3]
    assert row["details"]["mixed_search"] and row["post_training"]["failures"]
    # PT2E's file failed; ai-edge-quantizer's all-int8 file is tried first, and fails on the outlier too
    assert row["details"]["mixed_search"][0] == {"float_ops": 0, "float_weight_fraction": 0.0, "passed": False}
    assert row["status"] == "passed" or any(f.startswith(("mixed precision", "asymmetric", "Recall", "top-1"))
                                            for f in row["failures"])


@pytest.mark.slow
def test_float16_refusal_is_real(tiny, tmp_path):
    path, before, after = _edited(tiny, "tinyhead", _tiny_head)
    assert torch.nn.functional.cosine_similarity(before, after).min() > 0.5  # the same model, less its bias
    out = tmp_path / "fp16"
    report = export(path, formats=["tflite"], out_dir=out, parity_samples=0, calib_samples=8,
                    precisions={"tflite": ["float32", "float16"]}, raise_on_failure=False)
    assert _row(report, "float32")["status"] == "passed"
    row = _row(report, "float16")
    assert row["status"] == "failed" and not (out / row["file"]).exists()
    assert any(f.startswith("cosine min") for f in row["failures"]), row["failures"]  # under the 0.99 floor
    assert "post_training" not in row  # float16 has no mixed-precision retry


@pytest.mark.slow
def test_quant_report_names_the_planted_layers(outlier, tmp_path):
    proc = run_cli("quant-report", outlier, "--precision", "dynamic_int8", "--out", tmp_path, "--calib-samples", "16")
    assert "head" in proc.stdout and "float" in proc.stdout
    report = json.loads((tmp_path / "sensitivity_dynamic_int8.json").read_text())
    assert report["ops"][0]["layer"] == "head"  # the most sensitive op, by far
    assert report["ops"][0]["embedding_cosine_mean"] < report["ops"][-1]["embedding_cosine_mean"]
    assert not report["all_quantised"]["passes_gate"] and report["mixed"]["passes_gate"]
    assert (tmp_path / "sensitivity_dynamic_int8.png").stat().st_size > 1000


@pytest.mark.slow
@pytest.mark.parametrize("precision,calibration", [("weight_int8", "mse"), ("dynamic_int8", "octav"),
                                                   ("int8", "octav"), ("int16act", "minmax")])
def test_calibration_choices_and_int16_activations_convert_and_run(tiny, precision, calibration, tmp_path):
    from mobile_distill.export.tflite import converter as tflite
    from mobile_distill.export.tflite.mixed_precision import embed
    from mobile_distill.export.prepare import ExportModule, InputSpec

    net = model_from_checkpoint(load_checkpoint(tiny["ckpt"])).eval()
    spec = InputSpec(32, "nhwc")
    images = (torch.rand(8, 32, 32, 3) * 255).to(torch.uint8).numpy()
    details = tflite.convert(ExportModule(net, spec), spec, precision, tmp_path / "m.tflite", "{}",
                             calib=images, calibration=calibration)
    q = details["quantization"]
    assert q["calibration"] == calibration and q["float_ops"] == []
    algorithm = {"minmax": "min_max_uniform_quantize", "mse": "MSE", "octav": "OCTAV"}[calibration]
    by_op = {}
    for r in q["recipe"]:
        by_op.setdefault(r["operation"], set()).add(r["algorithm_key"])
    if calibration == "octav":  # OCTAV clips the weight ops; the rest (the normalisation's constants) stay min-max
        assert by_op["CONV_2D"] == by_op["FULLY_CONNECTED"] == {"OCTAV"}
        assert by_op["*"] == {"min_max_uniform_quantize", "no_quantize"}
    else:
        assert set().union(*by_op.values()) == {algorithm, "no_quantize"}
    if precision == "int16act":
        assert any(r["op_config"].get("activation_tensor_config", {}).get("num_bits") == 16 for r in q["recipe"])
    out = embed((tmp_path / "m.tflite").read_bytes(), spec, images)
    with torch.no_grad():
        ref = net(torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255))
    assert torch.nn.functional.cosine_similarity(torch.from_numpy(out), ref).min() > 0.95


def _float_weight_ops(model: bytes) -> set:
    """The weight ops of a TFLite file whose weights stay float32 (TensorType 0)."""
    from ai_edge_litert.tools import flatbuffer_utils

    from mobile_distill.export.tflite import mixed_precision as mp

    sg = flatbuffer_utils.read_model_from_bytearray(bytearray(model)).subgraphs[0]
    return {op.label for op, raw in zip(mp.list_ops(model), sg.operators)
            if op.type in mp.WEIGHT_OPS and sg.tensors[raw.inputs[1]].type == 0}


def _three_weight_ops(tiny):
    """The tiny model's dynamic-int8 quantiser, its weight count, and three weight ops holding at
    least 1 % of the weights each: the biggest (the head), and two others."""
    from mobile_distill.export.prepare import ExportModule, InputSpec
    from mobile_distill.export.tflite import converter as tflite
    from mobile_distill.export.tflite import mixed_precision as mp

    net = model_from_checkpoint(load_checkpoint(tiny["ckpt"])).eval()
    spec = InputSpec(32, "nhwc")
    q = mp.Quantiser(tflite._convert_float(ExportModule(net, spec), spec), spec, None, "dynamic_int8")
    weights = q.weight_ops()
    total = sum(op.params for op in weights)
    head = max(weights, key=lambda op: op.params)
    needed, other = [op for op in weights if op is not head and op.params >= 0.01 * total][:2]
    assert head.params >= 0.01 * total
    return mp, q, total, head, needed, other


@pytest.mark.slow
def test_the_search_quantises_again_a_big_op_that_later_float_ops_made_unnecessary(tiny):
    """Forward selection keeps the head (ranked first) until the op that matters is float too; the
    pruning pass then quantises the head again, since the file passes without it."""
    mp, q, total, head, needed, other = _three_weight_ops(tiny)

    def passes(model: bytes) -> bool:  # a gate that only the float `needed` op satisfies
        return needed.label in _float_weight_ops(model)

    found = mp.search(q, [head, other, needed], passes)
    assert [op.label for op in found["float_ops"]] == [needed.label]
    assert _float_weight_ops(found["model"]) == {needed.label}
    assert [t["passed"] for t in found["tried"][:3]] == [False, False, True]
    assert found["tried"][3]["requantised"] == head.label  # the biggest first
    assert {t["requantised"]: t["passed"] for t in found["tried"][3:]} == {head.label: True, other.label: True,
                                                                           needed.label: False}


@pytest.mark.slow
def test_a_mix_the_final_gate_refuses_sends_the_search_on(tiny):
    """The search picks its mix on other images than the gate's: where the gate refuses the pruned
    mix, the mix before pruning is gated next, and with every mix refused the search stops after
    ``max_refusals`` of them instead of gating mix after mix on the gate's own images."""
    mp, q, total, head, needed, other = _three_weight_ops(tiny)
    gated = []

    def passes(model: bytes) -> bool:  # the search's images: the float `needed` op is enough
        return needed.label in _float_weight_ops(model)

    def accept(model: bytes, ops) -> bool:  # the gate's images: `other` must be float too
        gated.append(_float_weight_ops(model))
        return other.label in gated[-1]

    found = mp.search(q, [head, other, needed], passes, accept=accept)
    assert gated == [{needed.label}, {head.label, other.label, needed.label}]
    assert [op.label for op in found["float_ops"]] == [head.label, other.label, needed.label]
    assert _float_weight_ops(found["model"]) == set(gated[-1]) and found["refusals"] == 1
    assert [t for t in found["tried"] if t.get("gate")] == [
        {"float_ops": 1, "float_weight_fraction": pytest.approx(needed.params / total), "passed": False, "gate": "refused"}]

    gated.clear()
    never = mp.search(q, [head, other, needed], passes, accept=lambda m, ops: gated.append(ops) and False,
                      max_refusals=2)
    assert never["model"] is None and never["refusals"] == 2 and len(gated) == 2


@pytest.mark.slow
def test_the_all_int8_file_the_gate_refuses_is_not_gated_again(tiny, tmp_path):
    """Where ai-edge-quantizer's all-int8 file passes the search's images but not the gate, the ranked
    search goes on, and a pruned mix that comes back to every op int8 is not gated a second time."""
    from mobile_distill.export.prepare import ExportModule, InputSpec
    from mobile_distill.export.tflite import converter as tflite

    net = model_from_checkpoint(load_checkpoint(tiny["ckpt"])).eval()
    spec = InputSpec(32, "nhwc")
    images = (torch.rand(8, 32, 32, 3) * 255).to(torch.uint8).numpy()
    path, gated = tmp_path / "m.tflite", []

    def confirm() -> bool:  # the gate refuses a file with every weight op int8
        gated.append(_float_weight_ops(path.read_bytes()))
        return bool(gated[-1])

    with torch.no_grad():
        reference = net(torch.from_numpy(images).permute(0, 3, 1, 2).float().div(255)).numpy()
    details = tflite.convert_mixed(ExportModule(net, spec), spec, "int8", path, "{}", images, images, reference,
                                   lambda model: True, confirm=confirm)
    assert gated[0] == set() and all(gated[1:]) and len(gated) == 2, gated
    assert details["mixed_search"][:2] == [{"float_ops": 0, "float_weight_fraction": 0.0, "passed": True},
                                           {"float_ops": 0, "float_weight_fraction": 0.0, "passed": False,
                                            "gate": "refused"}]
    assert details["gate_refusals"] == 1 and len(details["quantization"]["float_ops"]) == 1
    assert _float_weight_ops(path.read_bytes()) == gated[-1]


@pytest.mark.slow
def test_a_failed_pt2e_int8_file_is_first_retried_as_ai_edge_quantizers_all_int8_file(tiny, tmp_path):
    """Static int8 with min-max comes from litert-torch's PT2E; when it fails, ai-edge-quantizer's own
    all-int8 file is another file, tried before the sensitivity ranking: where it passes, no op is
    kept float and no ranking is spent."""
    from mobile_distill.export.prepare import ExportModule, InputSpec
    from mobile_distill.export.tflite import converter as tflite

    net = model_from_checkpoint(load_checkpoint(tiny["ckpt"])).eval()
    spec = InputSpec(32, "nhwc")
    images = (torch.rand(8, 32, 32, 3) * 255).to(torch.uint8).numpy()
    checked = []

    def passes(model: bytes) -> bool:  # a gate that takes only a file with every weight op int8
        checked.append(_float_weight_ops(model))
        return not checked[-1]

    details = tflite.convert_mixed(ExportModule(net, spec), spec, "int8", tmp_path / "m.tflite", "{}", images,
                                   images, None, passes)
    assert checked == [set()] and details["sensitivity"] == []
    assert details["mixed_search"] == [{"float_ops": 0, "float_weight_fraction": 0.0, "passed": True}]
    q = details["quantization"]
    assert q["quantizer"] == "ai-edge-quantizer" and q["float_ops"] == []
    assert not _float_weight_ops((tmp_path / "m.tflite").read_bytes())


@pytest.mark.slow
def test_unknown_calibration_is_a_clear_error(tiny):
    from mobile_distill.export import ExportError

    with pytest.raises(ExportError, match="unknown calibration 'percentile'"):
        export(tiny["ckpt"], formats=["tflite"], calibration="percentile")


@pytest.mark.slow
def test_bench_reports_quantised_and_mixed_latency_against_float32_at_two_thread_counts(mixed):
    from mobile_distill.bench import bench, format_table

    out, report = mixed
    bench_report = bench(out, threads=[1, 2], warmup=1, runs=3, anchor="off")
    rows = {(r["format"], r["precision"]): r for r in bench_report["rows"]}
    f32 = rows[("tflite", "float32")]
    for precision in ("int8", "dynamic_int8"):
        row, exported = rows[("tflite", precision)], _row(report, precision)
        # a refused file is measured too (it was kept) and marked, never counted as a bench failure
        assert row["status"] == ("ok" if exported["status"] == "passed" else "refused"), row
        assert set(row["speedup_vs_float32"]) == {"1", "2"}
        for t in ("1", "2"):
            assert row["speedup_vs_float32"][t] == pytest.approx(f32["threads"][t]["median_ms"] / row["threads"][t]["median_ms"])
        assert "recall@1" in row["recall"]
    assert rows[("tflite", "dynamic_int8")]["float_ops"] == 1  # the mixed file: its head in float
    table = format_table(bench_report)
    assert "speed vs fp32 1T/2T" in table and "dynamic_int8 mixed (1 float ops)" in table
    assert bench_report["passed"]
    assert (out / "bench" / "latency_vs_recall.png").stat().st_size > 1000
