#!/usr/bin/env bash
# Developer ID signature for "Qwen Desk.app", inside out, with the hardened runtime.
#
#   packaging/sign_app.sh "dist/Qwen Desk.app" "Developer ID Application: NAME (TEAMID)" packaging/entitlements.plist
#
# Every Mach-O file (Python, its extension modules, libmlx, Qt's libraries and plug-ins) is
# signed on its own, deepest first, then each .framework bundle (Qt's), then the app, whose
# main executable alone gets the entitlements (libraries inherit their host's). Not
# `codesign --deep`: Apple advises against it for signing, and it would hand the entitlements
# to every nested binary.
set -euo pipefail

app=${1:?the .app to sign}
identity=${2:?the signing identity}
entitlements=${3:?the entitlements plist}
main="$app/Contents/MacOS/$(/usr/libexec/PlistBuddy -c 'Print :CFBundleExecutable' "$app/Contents/Info.plist")"
sign=(codesign --force --timestamp --options runtime --sign "$identity")

depth_first() { awk -F/ '{ print NF "\t" $0 }' | sort -rn | cut -f2-; }

count=0
while IFS= read -r file; do
  [ "$file" = "$main" ] && continue
  if file -b "$file" | grep -q 'Mach-O'; then
    "${sign[@]}" "$file"
    count=$((count + 1))
  fi
done < <(find "$app/Contents" -type f | depth_first)

while IFS= read -r framework; do
  "${sign[@]}" "$framework"
  count=$((count + 1))
done < <(find "$app/Contents" -type d -name '*.framework' | depth_first)

"${sign[@]}" --entitlements "$entitlements" "$app"
echo "signed $count nested binaries and frameworks, then $app"

codesign --verify --deep --strict --verbose=2 "$app"
codesign --display --entitlements - "$app"
