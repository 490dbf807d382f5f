"""Do the default recipes carry to data that is not emoji? A glyph-retrieval set built on this
machine, and the built-in recipes run on it unchanged.

    .venv/bin/python benchmarks/other_data.py --seeds 0,1            # ~40 min per seed on 2 cores

The set: every letter and digit (ASCII, Latin-1, Greek, Cyrillic) drawn by each font that
matplotlib ships (DejaVu Sans / Serif / Mono in four weights, STIX General in four, five Computer
Modern faces), black on white at 64 px, with a seeded jitter of size and position. A class is a
character; characters that DejaVu Sans draws identically to an earlier one (Latin A, Greek Alpha,
Cyrillic A) are dropped, so no two classes share a drawing. About 200 classes of 16-21 images:
close to the sprite set the issue describes (115 training classes, ~15 images each), and unlike
emoji in every way the recipes might have been tuned to (grey line art, hair-thin differences
between classes such as "e" and "é", no unlabeled pool).

The runs: ``mobile_distill.demo.run`` with the recipes' own schedules (``teacher_emoji``: 10 epochs;
``student_emoji``: 160 epochs, 8 cached views; the alone row: the same schedule, triplet loss),
``--data folder:<the set>``, each seed. Figures go to ``benchmarks/results/other_data_glyphs.json``
and ``.md``.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont, ImageOps

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# matplotlib's fonts with real Latin glyphs (STIXNonUni*, STIXSiz*, cmex/cmsy map symbols onto
# ASCII codes; LastResort draws a placeholder box for everything)
FONTS = ["DejaVuSans", "DejaVuSans-Bold", "DejaVuSans-Oblique", "DejaVuSans-BoldOblique",
         "DejaVuSerif", "DejaVuSerif-Bold", "DejaVuSerif-Italic", "DejaVuSerif-BoldItalic",
         "DejaVuSansMono", "DejaVuSansMono-Bold", "DejaVuSansMono-Oblique", "DejaVuSansMono-BoldOblique",
         "STIXGeneral", "STIXGeneralBol", "STIXGeneralItalic", "STIXGeneralBolIta",
         "cmr10", "cmb10", "cmss10", "cmti10", "cmtt10"]
CHARS = ([chr(c) for c in range(0x30, 0x3A)] + [chr(c) for c in range(0x41, 0x5B)] + [chr(c) for c in range(0x61, 0x7B)]
         + [chr(c) for c in range(0xC0, 0x100) if c not in (0xD7, 0xF7)]    # Latin-1 letters
         + [chr(c) for c in range(0x391, 0x3CA) if c != 0x3A2]               # Greek
         + [chr(c) for c in range(0x410, 0x450)])                            # Cyrillic
SIZE, BOX = 64, 48
MIN_IMAGES = 8


def _ink(font: ImageFont.FreeTypeFont, ch: str) -> Image.Image | None:
    """The character's glyph cropped to its ink, black on white (None if it draws nothing)."""
    canvas = Image.new("L", (3 * font.size, 3 * font.size), 255)
    ImageDraw.Draw(canvas).text((font.size, font.size // 2), ch, font=font, fill=0)
    box = ImageOps.invert(canvas).getbbox()
    return canvas.crop(box) if box else None


def build_glyphs(root: Path, seed: int = 0) -> dict:
    """Write ``root/<U+XXXX>/<font>.png`` and return a summary. Deterministic for a seed."""
    import matplotlib
    from matplotlib import ft2font

    font_dir = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    fonts = {name: font_dir / f"{name}.ttf" for name in FONTS if (font_dir / f"{name}.ttf").exists()}
    reference = ImageFont.truetype(str(fonts["DejaVuSans"]), 64)
    seen, classes = set(), []
    for ch in CHARS:  # drop homoglyphs: a class whose DejaVu Sans drawing repeats an earlier one
        ink = _ink(reference, ch)
        key = ink and (ink.size, ink.tobytes())
        if ink is not None and key not in seen:
            seen.add(key)
            classes.append(ch)
    rng = random.Random(seed)
    counts = {}
    for ch in classes:
        images = []
        for name, path in fonts.items():
            if ft2font.FT2Font(str(path)).get_char_index(ord(ch)) == 0:
                continue
            ink = _ink(ImageFont.truetype(str(path), 96), ch)
            if ink is not None:
                images.append((name, ink))
        if len(images) < MIN_IMAGES:
            continue
        folder = root / f"U+{ord(ch):04X}"
        folder.mkdir(parents=True, exist_ok=True)
        for name, ink in images:
            scale = BOX * rng.uniform(0.8, 1.0) / max(ink.size)
            glyph = ink.resize((max(1, round(ink.width * scale)), max(1, round(ink.height * scale))), Image.LANCZOS)
            image = Image.new("L", (SIZE, SIZE), 255)
            x = (SIZE - glyph.width) // 2 + rng.randint(-3, 3)
            y = (SIZE - glyph.height) // 2 + rng.randint(-3, 3)
            image.paste(glyph, (x, y))
            image.convert("RGB").save(folder / f"{name}.png")
        counts[ch] = len(images)
    return {"classes": len(counts), "images": sum(counts.values()), "fonts": len(fonts),
            "images_per_class": [min(counts.values()), max(counts.values())]}


def mean_std(values):
    values = [100 * v for v in values]
    return [round(statistics.mean(values), 1), round(statistics.stdev(values), 1) if len(values) > 1 else 0.0]


COMPAT_RECIPE = "student_emoji_compatible"


def compatible_seed(data_dir: Path, runs: Path, seed: int) -> dict:
    """The compatible recipe on the set, unchanged, under the teacher the default recipe's row had
    (the same config and seed: ``teacher_emoji`` on its own schedule), which is trained here again
    when its run is gone. Symmetric and asymmetric figures of the student, the teacher's own."""
    from mobile_distill.config import load_yaml, make_config
    from mobile_distill.demo import DEMO_TEACHER
    from mobile_distill.train import main as train

    teacher_recipe = load_yaml("teacher_emoji")
    data = f"folder:{data_dir}"
    teacher_cfg = make_config({**teacher_recipe, **DEMO_TEACHER, "data": data, "epochs": teacher_recipe["epochs"],
                               "seed": seed}, out_dir=str(runs))
    teacher_ckpt = runs / teacher_cfg.name / "last.pt"
    teacher = (json.loads((teacher_ckpt.parent / "results.json").read_text()) if teacher_ckpt.exists()
               else train(teacher_cfg, progress=False))
    student_cfg = make_config({**load_yaml(COMPAT_RECIPE), "data": data, "seed": seed}, out_dir=str(runs),
                              teacher=str(teacher_ckpt), name="student-compatible")
    student = train(student_cfg, progress=False)
    keys = ("recall@1", "recall@4", "map@r", "asymmetric/recall@1")
    return {"teacher": {k: teacher["test"].get(k) for k in keys}, "student": {k: student["test"].get(k) for k in keys},
            "distill": list(student_cfg.distill), "epochs": student_cfg.epochs}


def compatible_lines(state) -> list:
    seeds = sorted(state["compatible"])
    pick = lambda who, k: [state["compatible"][s][who][k] for s in seeds]  # noqa: E731
    rows = [("teacher, its own gallery", pick("teacher", "recall@1")),
            ("compatible student, its own gallery (symmetric)", pick("student", "recall@1")),
            ("compatible student queries, teacher gallery (asymmetric)", pick("student", "asymmetric/recall@1"))]
    recipe = state["compatible"][seeds[0]]
    lines = ["", f"**Compatible recipe** (`{COMPAT_RECIPE}`: {' + '.join(recipe['distill'])}, {recipe['epochs']} "
             f"epochs), seeds {', '.join(seeds)}:", "", "| row | Recall@1 (mean ± std) | per seed |", "|---|---|---|"]
    for name, values in rows:
        m = mean_std(values)
        lines.append(f"| {name} | {m[0]} ± {m[1]} | {', '.join(f'{100 * v:.1f}' for v in values)} |")
    return lines


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seeds", default="0")
    p.add_argument("--data-dir", default=str(ROOT / "runs" / "other_data" / "glyphs"))
    p.add_argument("--runs-dir", default=str(ROOT / "runs" / "other_data"))
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "other_data_glyphs.json"))
    p.add_argument("--compatible", action="store_true", help=f"also run the compatible recipe ({COMPAT_RECIPE}) "
                   "on each seed, under that seed's teacher")
    args = p.parse_args()
    from mobile_distill.config import load_yaml
    from mobile_distill.demo import run
    from mobile_distill.utils.io import write_json_atomic, write_text_atomic
    from mobile_distill.utils.provenance import provenance

    data_dir = Path(args.data_dir)
    if not data_dir.exists():
        tmp = data_dir.with_name(data_dir.name + ".tmp")
        summary = build_glyphs(tmp)
        tmp.rename(data_dir)
        (data_dir.parent / "glyphs.json").write_text(json.dumps(summary))
    summary = json.loads((data_dir.parent / "glyphs.json").read_text())
    out = Path(args.out)
    state = json.loads(out.read_text()) if out.exists() else {"seeds": {}}
    teacher_recipe, student_recipe = load_yaml("teacher_emoji"), load_yaml("student_emoji")
    for seed in [int(s) for s in args.seeds.split(",")]:
        if str(seed) in state["seeds"]:
            continue
        start = time.perf_counter()
        runs = Path(args.runs_dir) / f"s{seed}"
        run(out_dir=str(runs), progress=False, export_formats=(), data=f"folder:{data_dir}",
            teacher_overrides={"epochs": teacher_recipe["epochs"], "seed": seed},
            student_overrides={"epochs": student_recipe["epochs"], "cache_views": student_recipe["cache_views"],
                               "eval_every": student_recipe["eval_every"], "seed": seed})
        demo = json.loads((runs / "demo.json").read_text())
        rows = {k: {m: v.get(m) for m in ("recall@1", "recall@4", "map@r", "asymmetric/recall@1")}
                for k, v in demo["rows"].items()}
        state["seeds"][str(seed)] = {"rows": rows, "closure": demo["closure"], "schedule": demo["schedule"],
                                     "wall_time_s": round(time.perf_counter() - start, 1), "provenance": provenance()}
        write_json_atomic(out, state)
    for seed in [int(s) for s in args.seeds.split(",")] if args.compatible else []:
        if str(seed) not in state.setdefault("compatible", {}):
            start = time.perf_counter()
            row = compatible_seed(data_dir, Path(args.runs_dir) / f"s{seed}", seed)
            state["compatible"][str(seed)] = {**row, "wall_time_s": round(time.perf_counter() - start, 1),
                                              "provenance": provenance()}
            write_json_atomic(out, state)
    names = list(next(iter(state["seeds"].values()))["rows"])
    seeds = sorted(state["seeds"])

    def per_seed(name, metric="recall@1"):
        return [state["seeds"][s]["rows"][name].get(metric) for s in seeds]

    teacher, alone, distilled = (next(n for n in names if key in n) for key in ("teacher (fine-tuned)", "alone", "distilled"))
    gain = [d - a for d, a in zip(per_seed(distilled), per_seed(alone))]
    over_teacher = [d - t for d, t in zip(per_seed(distilled), per_seed(teacher))]
    table = {n: mean_std(per_seed(n)) for n in names}
    state.update(data=summary, table=table, gain_over_alone=mean_std(gain), gain_over_teacher=mean_std(over_teacher),
                 asymmetric=mean_std(per_seed(distilled, "asymmetric/recall@1")),
                 closure=mean_std([state["seeds"][s]["closure"] for s in seeds]),
                 provenance={**provenance(), "outputs": [out.with_suffix(".md").name]})
    write_json_atomic(out, state)
    lines = [f"glyphs (built by benchmarks/other_data.py): {summary['classes']} classes, {summary['images']} images, "
             f"{summary['fonts']} fonts, {summary['images_per_class'][0]}-{summary['images_per_class'][1]} per class; "
             f"alternate classes train / test. Built-in recipes unchanged, seeds {', '.join(seeds)}.", "",
             "| row | Recall@1 (mean ± std) | per seed |", "|---|---|---|"]
    for n in names:
        lines.append(f"| {n} | {table[n][0]} ± {table[n][1]} | {', '.join(f'{100 * v:.1f}' for v in per_seed(n))} |")
    a = state["asymmetric"]
    lines += ["", f"distilled - alone: {state['gain_over_alone'][0]:+} ± {state['gain_over_alone'][1]} points; "
              f"distilled - teacher: {state['gain_over_teacher'][0]:+} ± {state['gain_over_teacher'][1]} points; "
              f"asymmetric R@1 (student queries, teacher gallery): {a[0]} ± {a[1]}.",
              f"closure (distilled - alone) / (teacher - alone): {state['closure'][0]} ± {state['closure'][1]} % "
              "(not a useful figure when the teacher leads the alone student by a few points only)"]
    if state.get("compatible"):
        lines += compatible_lines(state)
    write_text_atomic(out.with_suffix(".md"), "\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
