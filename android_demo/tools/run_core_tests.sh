#!/usr/bin/env bash
# Compile the pure-Kotlin `core` module and its tests with kotlinc and run them with JUnit 4.
# Usage: run_core_tests.sh TOOLS_DIR BUILD_DIR [GOLDEN_DIR]
# Prints JUnit's report and a last line "N passed, N failed" (CI reads that line, not JUnit's XML).
set -euo pipefail
TOOLS=${1:?usage: run_core_tests.sh TOOLS_DIR BUILD_DIR [GOLDEN_DIR]}
BUILD=${2:?usage: run_core_tests.sh TOOLS_DIR BUILD_DIR [GOLDEN_DIR]}
GOLDEN=${3:-}
HERE=$(cd "$(dirname "$0")/.." && pwd)
J="$TOOLS/jars"
mkdir -p "$BUILD"
"$TOOLS/kotlinc/bin/kotlinc" -nowarn -cp "$J/json.jar" "$HERE/core/src/main/kotlin" -d "$BUILD/core.jar"
"$TOOLS/kotlinc/bin/kotlinc" -nowarn -cp "$BUILD/core.jar:$J/json.jar:$J/junit4.jar:$J/hamcrest.jar" \
    "$HERE/core/src/test/kotlin" -d "$BUILD/core-tests.jar"
CLASSES=$(cd "$HERE/core/src/test/kotlin" && find . -name '*Test.kt' | sed 's|^\./||; s|\.kt$||; s|/|.|g' | sort)
CP="$BUILD/core.jar:$BUILD/core-tests.jar:$J/json.jar:$J/junit4.jar:$J/hamcrest.jar:$TOOLS/kotlinc/lib/kotlin-stdlib.jar"
set +e
java -DMDISTILL_GOLDEN_DIR="$GOLDEN" -cp "$CP" org.junit.runner.JUnitCore $CLASSES > "$BUILD/junit.txt" 2>&1
status=$?
set -e
cat "$BUILD/junit.txt"
run=$(grep -oE 'Tests run: [0-9]+' "$BUILD/junit.txt" | grep -oE '[0-9]+' | tail -1 || true)
failed=$(grep -oE 'Failures: [0-9]+' "$BUILD/junit.txt" | grep -oE '[0-9]+' | tail -1 || true)
if [ -z "$run" ]; then run=$(grep -oE 'OK \([0-9]+ test' "$BUILD/junit.txt" | grep -oE '[0-9]+' || echo 0); failed=0; fi
echo "$(( run - failed )) passed, $failed failed"
exit $status
