"""The distillation table's bookkeeping (benchmarks/distill_table.py): which rows it runs, with
which settings, how it turns rows into closure and the peer comparison, and how a killed sweep goes on
(the one test that trains, on tiny shapes)."""

import pytest

from conftest import load_benchmark


@pytest.fixture(scope="module")
def table():
    return load_benchmark("distill_table")


def _rows(specs):
    return {(s["row"], s["overrides"]["seed"]): s["overrides"] for s in specs}


def test_rows_share_schedule_and_alone_drops_the_teacher(table, tmp_path):
    specs = table.specs_for("scratch", "t.pt", [0, 1, 2], tmp_path, 10, {"runs": []}, 1.0, plateau_check=True)
    rows = _rows(specs)
    epochs = rows[("default recipe", 0)]["epochs"]
    assert {rows[("alone", s)]["epochs"] for s in (0, 1, 2)} == {epochs}  # same schedule as distilled
    alone = rows[("alone", 1)]
    assert alone["distill"] == [] and alone["unlabeled"] == "" and alone["loss"] == "triplet"
    assert alone["lr"] == table.ALONE_LR
    assert rows[(table.ALONE_2X, 0)]["epochs"] == 2 * epochs
    tuning = [r for r in rows if r[0].startswith("tuning: ") and r[0] != table.TUNED_DEFAULT]
    assert len(tuning) == sum(len(w) for w in table.PEERS.values()) + len(table.PURE_PEERS)
    assert all(rows[r]["epochs"] == 10 for r in tuning) and rows[(table.TUNED_DEFAULT, 0)]["epochs"] == 10
    pure = [rows[r] for r in tuning if rows[r]["loss"] == "none"]
    assert sorted(p["distill"][0].split(":")[0] for p in pure) == sorted(table.PURE_PEERS)
    assert not any(r[0].startswith("peer:") for r in rows)  # finals wait for their tuning rows
    # the pretrained student alone keeps its recipe's learning rates (ImageNet backbone)
    pre = _rows(table.specs_for("pretrained", "t.pt", [0], tmp_path, 10, {"runs": []}, 1.0))
    assert "lr" not in pre[("alone", 0)] and not any(r[0].startswith("tuning") for r in pre)
    assert (table.ALONE_2X, 0) not in pre  # the plateau check at twice the schedule is opt-in


def test_schedule_builds_each_teacher_cache_first_and_runs_cacheless_rows_beside_it(table, tmp_path):
    specs = table.specs_for("scratch", "t.pt", [0, 1], tmp_path, 10, {"runs": []}, 1.0)
    order, builders = table.schedule(specs)
    assert sorted(s["id"] for s in order) == sorted(s["id"] for s in specs)  # every row exactly once
    assert list(builders) == ["t.pt"] and order[0] is builders["t.pt"]
    # the builder is a row that needs the most cached feature maps (attention: two stages)
    assert table.map_stages(order[0]) == max(table.map_stages(s) for s in specs) == 2
    cacheless = [i for i, s in enumerate(order) if not table.cache_group(s)]
    waiting = [i for i, s in enumerate(order[1:], 1) if table.cache_group(s)]
    assert cacheless and waiting and max(cacheless) < min(waiting)
    assert {order[i]["row"] for i in cacheless} == {"alone"}


def test_peer_final_runs_the_best_tuned_variant(table, tmp_path):
    variants = table.peer_variants("rkd")
    done = [{"id": table.row_id("scratch", f"tuning: {row}", 0), "test": {"recall@1": r}}
            for (row, _), r in zip(variants, (0.10, 0.30, 0.20, 0.25))]
    rows = _rows(table.specs_for("scratch", "t.pt", [0], tmp_path, 10, {"runs": done}, 1.0))
    finals = [r for r in rows if r[0].startswith("peer:")]
    best = table.PEERS["rkd"][1]
    assert finals == [(f"peer: triplet + rkd:{best:g} (best of 4)", 0)]
    assert rows[finals[0]]["distill"] == [f"rkd:{best:g}"] and rows[finals[0]]["epochs"] == rows[("alone", 0)]["epochs"]
    assert rows[finals[0]]["lr"] == table.ALONE_LR and rows[finals[0]]["loss"] == "triplet"
    # --peer-seeds 2: the same final on the first two seeds
    rows = _rows(table.specs_for("scratch", "t.pt", [0, 1, 2], tmp_path, 10, {"runs": done}, 1.0, peer_seeds=2))
    assert [r for r in rows if r[0].startswith("peer:")] == [(finals[0][0], 0), (finals[0][0], 1)]


def _run(row, seed, r1, epochs=80):
    return {"block": "scratch", "row": row, "seed": seed, "test": {"recall@1": r1}, "params": 1, "gflops": 1,
            "image_size": 64, "epochs": epochs, "optimizer_steps": 10, "train_time_s": 1.0}


def test_verdicts_closure_spread_and_peer_margin(table):
    runs = [_run("alone", s, r) for s, r in enumerate((0.20, 0.22, 0.24))]
    runs += [_run("default recipe", s, r) for s, r in enumerate((0.50, 0.52, 0.54))]
    runs += [_run("peer: triplet + hint (best weight 1)", 0, 0.40), _run("peer: triplet + rkd (best weight 2)", 0, 0.45)]
    runs += [_run(table.ALONE_2X, 0, 0.32, epochs=160)]
    for r, curve in zip(runs[:3], ([0.10, 0.15, 0.20], [0.12, 0.17, 0.22], [0.14, 0.19, 0.24])):
        r["curve"] = [[e, c] for e, c in zip((8, 54, 80), curve)]
    v = table.verdicts(table.summarise(runs), {"scratch": {"recall@1": 0.62}})["scratch"]
    assert v["closure_vs_alone_2x"] == pytest.approx((0.52 - 0.32) / (0.62 - 0.32))
    assert v["closure"] == pytest.approx((0.52 - 0.22) / (0.62 - 0.22))
    assert v["larger_seed_std"] == pytest.approx(0.02) and v["gain_over_twice_std"]
    assert v["best_peer"].startswith("peer: triplet + rkd") and v["margin_over_best_peer"] == pytest.approx(0.07)
    # plateau of the alone row from its mean curve: +5 points from epoch 54 (nearest 2/3 of 80) on
    assert v["alone_last_third_from_epoch"] == 54 and v["alone_last_third_change"] == pytest.approx(0.05)
    assert not v["alone_plateaued"]
    for r in runs[:3]:
        r["curve"][-1][1] = r["curve"][1][1] + 0.005
    flat = table.verdicts(table.summarise(runs), {"scratch": {"recall@1": 0.62}})["scratch"]
    assert flat["alone_plateaued"] and flat["alone_last_third_change"] == pytest.approx(0.005)
    # a gain inside twice the spread is flagged
    noisy = [_run("alone", s, r) for s, r in enumerate((0.20, 0.40))] + [_run("default recipe", s, r)
                                                                         for s, r in enumerate((0.30, 0.50))]
    assert not table.verdicts(table.summarise(noisy), {"scratch": {"recall@1": 0.62}})["scratch"]["gain_over_twice_std"]


def test_rows_waiting_for_a_cache_start_once_its_builder_has_trained_an_epoch(table, tmp_path):
    import os
    import time

    spec = {"overrides": {"out_dir": str(tmp_path), "name": "default_recipe-s0"}}
    assert not table.epoch_done(spec, None) and not table.epoch_done(spec, time.time())
    old = tmp_path / "default_recipe-s0" / "metrics.csv"  # an earlier run's folder: not this launch
    old.parent.mkdir()
    old.write_text("epoch\n1\n")
    os.utime(old, (1e9, 1e9))
    since = time.time() - 1
    assert not table.epoch_done(spec, since)
    new = tmp_path / "default_recipe-s0-2" / "metrics.csv"  # training picked the next free name
    new.parent.mkdir()
    new.write_text("epoch\n1\n")
    assert table.epoch_done(spec, since)
    assert not table.epoch_done({"overrides": {"out_dir": str(tmp_path), "name": "alone-s0"}}, since)


@pytest.mark.slow
def test_a_row_killed_mid_run_resumes_to_the_uninterrupted_result(table, tmp_path):
    """A sweep of many hours stops (a session ends, a kill) and goes on: the killed row continues from
    its last.pt in place and ends where an uninterrupted run ends; a finished row is not trained twice;
    a run of other settings under the same name is not taken over."""
    import json
    import signal
    import subprocess
    import sys
    import time

    from conftest import make_shapes_dataset

    from mobile_distill.checkpoint import load_checkpoint

    shapes = make_shapes_dataset(tmp_path / "shapes")
    tiny = {"data": f"folder:{shapes}", "teacher": "", "distill": [], "unlabeled": "", "teacher_cache": False,
            "loss": "triplet", "image_size": 32, "embedding_dim": 16, "classes_per_batch": 4, "images_per_class": 3,
            "batches_per_epoch": 4, "epochs": 8, "eval_every": 0, "eval_batch_size": 16, "name": "row", "seed": 0}

    def spec(runs: str, **changes):
        return {"id": f"shapes|row|{runs}", "block": "shapes", "row": "row", "recipe": "student_emoji",
                "runs_dir": str(tmp_path / runs), "overrides": {**tiny, "out_dir": str(tmp_path / runs), **changes}}

    whole = table.run_one(spec("whole"))
    killed = spec("killed")
    (tmp_path / "spec.json").write_text(json.dumps(killed))
    last = tmp_path / "killed" / "row" / "last.pt"
    proc = subprocess.Popen([sys.executable, str(table.__file__), "--run-one", str(tmp_path / "spec.json")],
                            env={**__import__("os").environ, "OMP_NUM_THREADS": "1"},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None and not (last.exists() and load_checkpoint(last)["epoch"] >= 2):
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_at = load_checkpoint(last)["epoch"]
    assert 2 <= killed_at < 8 and not (last.parent / "results.json").exists(), killed_at
    resumed = table.run_one(killed)
    assert resumed["test"] == whole["test"] and resumed["optimizer_steps"] == whole["optimizer_steps"]
    assert sorted(p.name for p in (tmp_path / "killed").iterdir()) == ["row"]  # continued in place
    # finished: the second call reads its results instead of training again
    mtime = last.stat().st_mtime_ns
    assert table.run_one(killed)["test"] == whole["test"] and last.stat().st_mtime_ns == mtime
    # other settings under the same name: a new run beside it, the old one untouched
    other = table.run_one(spec("killed", seed=1))
    assert other["config"]["name"] == "row" and (tmp_path / "killed" / "row-2" / "results.json").exists()
    assert last.stat().st_mtime_ns == mtime
