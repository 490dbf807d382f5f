"""The student sweep of benchmarks/frontier.py, end to end on a tiny data set: rows trained alone,
distilled and compatible under one teacher, each row's int8 file through the export gate, timed,
and the table, JSON and plot written from those runs."""

import json
import shutil

import pytest

from conftest import load_benchmark, make_shapes_dataset, run_cli, tiny_train_args


@pytest.mark.slow
def test_sweep_trains_exports_times_and_resumes(tmp_path, capsys):
    frontier = load_benchmark("frontier")
    shapes = make_shapes_dataset(tmp_path / "shapes")
    run_cli("train", *tiny_train_args(shapes, tmp_path / "teacher", model="resnet18", **{"embedding-dim": 32}))
    teacher = tmp_path / "teacher" / "tiny" / "last.pt"
    out = tmp_path / "results" / "frontier.json"
    args = ["--teacher", str(teacher), "--data", f"folder:{shapes}", "--seeds", "0", "--compatible",
            "--students", "resnet-18", "--epochs-scale", str(6 / 160), "--jobs", "1",
            "--latency-runs", "5", "--out", str(out), "--runs-dir", str(tmp_path / "runs"),
            "--set", "classes_per_batch=4", "--set", "images_per_class=4", "--set", "batches_per_epoch=8", "--set", "lr=1e-3", "--set", "backbone_lr=1e-3",
            "--set", "cache_views=2", "--set", "teacher_image_size=32", "--set", "image_size=32"]
    frontier.main(args)
    state = json.loads(out.read_text())
    assert sorted(r["row"] for r in state["runs"]) == sorted(f"ResNet-18, 64 px | {m}" for m in frontier.MODES)
    assert [e["row"].rsplit(" | ", 1)[1] for e in state["table"]] == list(frontier.MODES)
    for run in state["runs"]:
        results = json.loads((tmp_path / "runs" / "shapes" / run["config"]["name"] / "results.json").read_text())
        assert run["test"]["recall@1"] == results["test"]["recall@1"] and run["epochs"] == 6
        if not run["row"].endswith("alone"):  # queries against the teacher's gallery
            assert 0 <= run["test"]["asymmetric/recall@1"] <= 1
        report = json.loads((tmp_path / "runs" / run["int8"]["export_dir"] / "export_report.json").read_text())
        tflite = next(r for r in report["rows"] if r["format"] == "tflite")
        assert run["int8"]["status"] == tflite["status"] and run["int8"]["size_bytes"] == tflite.get("size_bytes")
        if tflite["status"] == "passed":  # the file's own figure over the split, near its student's
            assert run["int8"]["latency_ms"] > 0
            assert run["int8"]["recall@1"] == pytest.approx(run["test"]["recall@1"], abs=0.25)
    compat = next(r for r in state["runs"] if r["row"].endswith("compatible"))
    assert compat["config"]["compatible"] and any(d.startswith("contrastive") for d in compat["config"]["distill"])
    assert not compat["config"]["init_from"]  # the teacher's embedding size differs: no start from its weights
    # a student of the teacher's network and size starts from the teacher, as the compatible recipe says
    assert frontier.row_overrides("lite0-64", "compatible", ("efficientnet_lite0", 512))["init_from"] == "teacher"
    assert "init_from" not in frontier.row_overrides("lite0-64", "compatible", ("efficientnet_lite0", 32))
    assert "init_from" not in frontier.row_overrides("lite0-64", "distilled", ("efficientnet_lite0", 512))
    table = {e["row"]: e for e in state["table"]}
    assert table["ResNet-18, 64 px | alone"]["recall@1"][0] == round(
        100 * next(r for r in state["runs"] if r["row"].endswith("alone"))["test"]["recall@1"], 2)
    md = out.with_suffix(".md").read_text()
    assert md.count("| ResNet-18, 64 px |") == 3 and out.with_suffix(".png").stat().st_size > 10_000
    # resumable: a second run trains nothing and keeps every figure
    before = out.read_text()
    frontier.main(args)
    again = json.loads(out.read_text())
    assert [r["test"] for r in again["runs"]] == [r["test"] for r in state["runs"]]
    assert len(json.loads(before)["runs"]) == len(again["runs"]) == 3
    # one mode at a time (a long sweep runs its distilled rows first): nothing new to train here either
    frontier.main([*args[:args.index("--compatible")], "--modes", "distilled", *args[args.index("--compatible") + 1:]])
    assert json.loads(out.read_text())["runs"] == again["runs"]
    frontier.main([*args, "--retime"])  # every passing file timed again, nothing trained
    retimed = json.loads(out.read_text())["runs"]
    assert [r["test"] for r in retimed] == [r["test"] for r in again["runs"]]
    timed = [i for i, r in enumerate(retimed) if r["int8"]["status"] == "passed"]
    assert timed and all(retimed[i]["int8"]["latency_ms"] > 0 for i in timed)
    assert [retimed[i]["int8"]["latency_ms"] for i in timed] != [again["runs"][i]["int8"]["latency_ms"] for i in timed]
    runs_dir = tmp_path / "runs"
    exported = {r["id"]: (runs_dir / r["int8"]["export_dir"] / "export_report.json").stat().st_mtime_ns for r in retimed}
    frontier.main([*args, "--reexport"])  # every file exported again (a newer export code), measured and timed
    again_exported = json.loads(out.read_text())["runs"]
    assert [r["test"] for r in again_exported] == [r["test"] for r in retimed]
    assert all((runs_dir / r["int8"]["export_dir"] / "export_report.json").stat().st_mtime_ns > exported[r["id"]]
               for r in again_exported)
    assert [r["int8"]["status"] for r in again_exported] == [r["int8"]["status"] for r in retimed]
    assert all(r["int8"]["latency_ms"] > 0 and "recall@1" in r["int8"] for r in again_exported if r["int8"]["status"] == "passed")
    other = tmp_path / "other-teacher"  # the same network retrained elsewhere: other weights, other figures
    shutil.copytree(teacher.parent, other)
    results = json.loads((other / "results.json").read_text())
    results["test"]["recall@1"] += 0.01
    (other / "results.json").write_text(json.dumps(results))
    before = out.read_text()
    for wrong in (["--modes", "distiled"], ["--epochs-scale", "0.5"], ["--teacher", str(other / "last.pt")]):
        with pytest.raises(SystemExit):  # a typo; rows of another schedule; rows of another teacher
            frontier.main([*args, *wrong])
    assert out.read_text() == before
    assert "holds rows distilled from a resnet18 teacher" in capsys.readouterr().err


def test_seeds_with_files_of_different_sizes_show_both_and_the_limit_holds_for_the_largest():
    """Two seeds of one row can pass the gate differently (all-int8, or mixed with ops in float):
    the table gives both sizes, and "under 5 MB" must hold for every seed's file."""
    frontier = load_benchmark("frontier")

    def run(seed, size_mb, recall, precision):
        return {"row": "MobileNet-1.0, 64 px | distilled", "seed": seed, "params": 3.7e6, "image_size": 64, "epochs": 40,
                "test": {"recall@1": recall, "asymmetric/recall@1": 0.3},
                "int8": {"status": "passed", "size_bytes": int(size_mb * 1e6), "precision": precision,
                         "recall@1": recall, "latency_ms": 0.4}}

    state = {"data": "emoji", "teacher": {"arch": "efficientnet_lite0", "image_size": 112, "recall@1": 56.0},
             "epochs_scale": 0.25, "latency_runs": 5, "cpu": "test CPU",
             "runs": [run(0, 4.1, 0.57, "int8"), run(1, 5.2, 0.56, "int8, 3 ops float")]}
    state["table"] = frontier.summarise(state)
    (entry,) = state["table"]
    assert (entry["int8_mb_min"], entry["int8_mb"]) == (4.1, 5.2)
    assert entry["recall@1"] == [56.5, 0.71]
    md = frontier.markdown(state)
    assert "| 4.10–5.20 | int8; int8, 3 ops float |" in md and "56.5 ± 0.7" in md
    assert md.rstrip().endswith("within 2 points of the teacher: none")  # 5.2 MB: not every seed's file is under 5
    state["runs"][1]["int8"]["size_bytes"] = int(4.1e6)
    state["table"] = frontier.summarise(state)
    md = frontier.markdown(state)
    assert "| 4.10 | int8; int8, 3 ops float |" in md
    assert md.rstrip().endswith("teacher: MobileNet-1.0, 64 px | distilled")
    # one seed's file failed the gate: the column says so, and one file's figures claim no spread
    state["runs"][1]["int8"] = {"status": "failed"}
    state["table"] = frontier.summarise(state)
    md = frontier.markdown(state)
    assert "| 4.10 | int8; none passed (1 of 2 seeds) | 57.0 | 0.40 |" in md, md
