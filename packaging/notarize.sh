#!/usr/bin/env bash
# Submit a .zip or .dmg to Apple's notary service and wait; print Apple's log if it is refused.
#   APPLE_ID=... APPLE_TEAM_ID=... APPLE_APP_PASSWORD=... packaging/notarize.sh FILE
set -euo pipefail
file=${1:?the .zip or .dmg to notarize}
credentials=(--apple-id "$APPLE_ID" --team-id "$APPLE_TEAM_ID" --password "$APPLE_APP_PASSWORD")
result=$(xcrun notarytool submit "$file" "${credentials[@]}" --wait --timeout 30m --output-format json) || true
echo "$result"
status=$(echo "$result" | python3 -c 'import json, sys; print(json.load(sys.stdin).get("status", ""))')
if [ "$status" != "Accepted" ]; then
  id=$(echo "$result" | python3 -c 'import json, sys; print(json.load(sys.stdin).get("id", ""))')
  [ -n "$id" ] && xcrun notarytool log "$id" "${credentials[@]}" || true
  echo "::error title=Notarization::$file was not accepted (status: ${status:-none})"
  exit 1
fi
