#!/usr/bin/env bash
# The headline benchmark in one command:   bash benchmarks/run_all.sh
#
#   1. the demo (emoji data, fine-tuned EfficientNet-Lite0 teacher, default MobileNet-0.25 student)
#      unless runs/student/last.pt exists;
#   2. the distillation table (resumable: rows already in benchmarks/results/distill_emoji.json
#      are kept, so a fresh clone reuses the committed table's rows; delete the JSON to recompute
#      it, several hours on 2 cores; the teacher is trained first if runs/table/teacher is missing);
#   3. export of the default student to every format (parity-gated; gate refusals are results);
#   4. mdistill bench over the exports at 1 and 2 threads, with the Keras-native TFLite anchor
#      built in its own environment (.venv-keras, tensorflow-cpu);
#   5. training throughput, 1 vs 2 processes (torchrun) on this CPU, unless
#      benchmarks/results/train_throughput.json exists (a GPU's figures come from a GPU machine:
#      benchmarks/train_throughput.py --settings gpu);
#   6. benchmarks/RESULTS.md + benchmarks/results/results.json with the machine description.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
make setup
if [ ! -x .venv-keras/bin/python ] || ! .venv-keras/bin/python -c "import tensorflow" 2>/dev/null; then
    python3.11 -m venv .venv-keras
    .venv-keras/bin/python -m pip install --quiet tensorflow-cpu==2.21.0 \
        || echo "warning: TensorFlow could not be installed; the Keras anchor will be skipped"
fi
export MDISTILL_KERAS_PYTHON="$PWD/.venv-keras/bin/python"
table_rows() { .venv/bin/python -c "import json,sys; print(len(json.load(open(sys.argv[1]))['runs']))" \
    benchmarks/results/distill_emoji.json 2>/dev/null || echo 0; }
if [ -f runs/student/last.pt ]; then demo="reused runs/ from an earlier make demo"
else .venv/bin/mdistill demo --quiet; demo="ran make demo"; fi
before=$(table_rows)
if [ ! -f runs/table/teacher/last.pt ]; then  # the table's teacher: the recipe's full 10 epochs
    OMP_NUM_THREADS=2 .venv/bin/mdistill train --config teacher_emoji --out-dir runs/table --name teacher --quiet
fi
.venv/bin/python benchmarks/distill_table.py --teacher runs/table/teacher/last.pt --blocks scratch \
    --tune-epochs 10 --no-peer-finals --runs-dir runs/table
# the pretrained block as it fits two CPU cores: the same Lite0 teacher, half the student recipe's epochs, two seeds
.venv/bin/python benchmarks/distill_table.py --blocks pretrained --large-teacher runs/table/teacher/last.pt \
    --seeds 0,1 --epochs-scale 0.5 --jobs 2 --runs-dir runs/table
table="trained $(( $(table_rows) - before )) table runs, reused ${before} from benchmarks/results/distill_emoji.json"
.venv/bin/mdistill export runs/student/last.pt --parity-samples 0 --out runs/student/export --quiet \
    || echo "(export: some files were refused by the parity gate; see the table above)"
.venv/bin/mdistill bench runs/student/export --threads 1,2 --warmup 20 --runs 300 --quiet
[ -f benchmarks/results/train_throughput.json ] \
    || .venv/bin/python benchmarks/train_throughput.py --teacher runs/teacher/last.pt --epochs 2 --repeats 2
.venv/bin/python benchmarks/write_results.py --export runs/student/export --wall-time-s $(( $(date +%s) - start )) \
    --reused "demo: ${demo}; distillation table: ${table}; export and bench: ran"
