#!/usr/bin/env bash
# Compile the app's Kotlin sources against android.jar (API 23 stubs) to catch framework API
# misuse. LiteRtEmbedder.kt is replaced by a same-API stub (its LiteRT AAR is on Google's Maven
# only) and R by the constants aapt would generate from res/.
# Usage: compile_app.sh TOOLS_DIR BUILD_DIR  (needs BUILD_DIR/core.jar from run_core_tests.sh)
set -euo pipefail
TOOLS=${1:?usage: compile_app.sh TOOLS_DIR BUILD_DIR}
BUILD=${2:?usage: compile_app.sh TOOLS_DIR BUILD_DIR}
HERE=$(cd "$(dirname "$0")/.." && pwd)
SRC="$HERE/app/src/main/kotlin/com/mobile_distill/demo"
mkdir -p "$BUILD/app-gen"
python3 "$HERE/tools/gen_r.py" "$HERE/app/src/main/res" com.mobile_distill.demo "$BUILD/app-gen/R.kt"
FILES=$(ls "$SRC"/*.kt | grep -v '/LiteRtEmbedder.kt$')
"$TOOLS/kotlinc/bin/kotlinc" -nowarn -cp "$TOOLS/jars/android.jar:$BUILD/core.jar" \
    $FILES "$HERE/tools/stubs/LiteRtEmbedder.kt" "$BUILD/app-gen/R.kt" -d "$BUILD/app-classes"
echo "app sources compiled against android.jar (API 23): $(echo "$FILES" | wc -l) files"
