#!/usr/bin/env bash
# Fetch what the Android demo's checks need into DEST (idempotent; no root, no system changes):
#   kotlinc      npm package kotlin-compiler (JetBrains' distribution)      -> DEST/kotlinc/bin/kotlinc
#   JUnit 4      Debian junit4 + libhamcrest-java                           -> DEST/jars/junit4.jar, hamcrest.jar
#   org.json     Debian libandroid-json-org-java (Android has it built in)  -> DEST/jars/json.jar
#   android.jar  API 23 stubs from Debian 11 libandroid-23-java              -> DEST/jars/android.jar
# apt runs with a private config in a temp dir, reading the archive URI from this machine's sources.
# Usage: fetch_tools.sh DEST
set -euo pipefail
DEST=${1:?usage: fetch_tools.sh DEST}
KOTLIN_VERSION=2.4.20
mkdir -p "$DEST/jars"
DEST=$(cd "$DEST" && pwd)

if [ ! -x "$DEST/kotlinc/bin/kotlinc" ]; then
    T=$(mktemp -d)
    (cd "$T" && npm pack --silent "kotlin-compiler@$KOTLIN_VERSION" >/dev/null && tar -xzf kotlin-compiler-*.tgz)
    rm -rf "$DEST/kotlinc"
    if [ -d "$T/package/kotlinc" ]; then mv "$T/package/kotlinc" "$DEST/kotlinc"; else mv "$T/package" "$DEST/kotlinc"; fi
    chmod +x "$DEST"/kotlinc/bin/* 2>/dev/null || true
    rm -rf "$T"
fi

need=0
for j in junit4 hamcrest json android; do [ -f "$DEST/jars/$j.jar" ] || need=1; done
if [ "$need" = 1 ]; then
    URI=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    [ -n "$URI" ] || URI=$(awk '$1=="deb" && $2 !~ /security/ {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
    [ -n "$URI" ] || { echo "fetch_tools: no Debian apt source found on this machine" >&2; exit 1; }
    W=$(mktemp -d); trap 'rm -rf "$W"' EXIT
    mkdir -p "$W/lists/partial" "$W/cache/archives/partial"
    KEY="[signed-by=/usr/share/keyrings/debian-archive-keyring.gpg]"
    printf 'deb %s %s bookworm main\ndeb %s %s bullseye main\n' "$KEY" "$URI" "$KEY" "$URI" > "$W/sources.list"
    O=(-o Dir::Etc::SourceList="$W/sources.list" -o Dir::Etc::SourceParts=/nonexistent -o Dir::State::Lists="$W/lists"
       -o Dir::Cache="$W/cache" -o APT::Sandbox::User=root -o Acquire::IndexTargets::deb::Contents-deb::DefaultEnabled=false)
    apt-get "${O[@]}" -q update >/dev/null
    (cd "$W" && apt-get "${O[@]}" -q download junit4/bookworm libhamcrest-java/bookworm \
        libandroid-json-org-java/bookworm libandroid-23-java=6.0.1+r72-6 >/dev/null)
    for f in "$W"/*.deb; do dpkg-deb -x "$f" "$W/x"; done
    cp "$(ls "$W"/x/usr/share/java/junit4-*.jar | head -1)" "$DEST/jars/junit4.jar"
    cp "$(ls "$W"/x/usr/share/java/hamcrest-[0-9]*.jar "$W"/x/usr/share/java/hamcrest-all*.jar 2>/dev/null | head -1)" "$DEST/jars/hamcrest.jar"
    cp "$(ls "$W"/x/usr/share/java/android-json*.jar "$W"/x/usr/share/java/json*.jar 2>/dev/null | head -1)" "$DEST/jars/json.jar"
    cp "$W/x/usr/share/java/com.android.android-23.jar" "$DEST/jars/android.jar"
fi
echo "tools in $DEST"
