#!/usr/bin/env bash
# The job summary of action.yml: the plan (what changes, and the monthly cost), and for up/down
# the result, in Markdown, from the JSON that `aira COMMAND --output json` printed. With
# GITHUB_OUTPUT set, also the action's outputs: changes, monthly-cost, url.
# Usage: summary.sh RESULT.json COMMAND
set -euo pipefail
result=$1 command=$2
# `plan` prints the plan; `up` and `down` print {plan, report, ...}.
plan='def usd: "$" + (. * 100 | round | tostring | if length < 3 then ("00" + .)[-3:] else . end | .[:-2] + "." + .[-2:]);
  if has("steps") then . else .plan end'
if ! [ -s "$result" ] || ! jq -e . "$result" > /dev/null 2>&1; then
  echo "## aira $command"
  echo
  echo "aira printed no JSON result (its error is in the step's log)."
  exit 0
fi
stack=$(jq -r "$plan | .stack" "$result")
echo "## aira $command: \`$stack\`"
echo
jq -r "$plan"' | .summary | "**\(.create)** to create, **\(.update)** to update, **\(.replace)** to replace, **\(.delete)** to delete, \(.no_op) unchanged"' "$result"
echo
if jq -e "$plan"' | [.steps[] | select(.action != "no-op")] | length > 0' "$result" > /dev/null; then
  echo "| | resource | kind | changes |"
  echo "|---|---|---|---|"
  jq -r "$plan"' | .steps[] | select(.action != "no-op")
    | "| `\({"create": "+", "update": "~", "replace": "-/+", "delete": "-"}[.action])` | `\(.id)` | \(.kind) | \([.changes[]?.path] | join(", ")) \(.reason // "") |"' "$result"
  echo
fi
if jq -e "$plan"' | .cost.monthly != null' "$result" > /dev/null; then
  jq -r "$plan"' | .cost | "**Estimated monthly cost** (\(.region), on-demand prices read \(.prices_checked)): **\(.monthly | usd)** a month"
    + (if .monthly_at_max > .monthly then " (\(.monthly_at_max | usd) with every service at its maximum count)" else "" end)
    + "; now \(.current_monthly | usd), change \(if .change >= 0 then "+" else "-" end)\(.change | fabs | usd)."' "$result"
  echo
  echo "<details><summary>cost by resource</summary>"
  echo
  echo "| resource | kind | what | a month |"
  echo "|---|---|---|---:|"
  jq -r "$plan"' | .cost.lines[] | "| `\(.id)` | \(.kind) | \(.what) | \(.monthly | usd) |"' "$result"
  echo
  jq -r "$plan"' | .cost.notes[] | "- \(.)"' "$result"
  echo "</details>"
  echo
elif jq -e "$plan"' | .cost != null' "$result" > /dev/null; then
  jq -r "$plan"' | .cost.notes[] | "Cost: \(.)"' "$result"
  echo
fi
url=$(jq -r '[.. | objects | .url? | strings] | first // empty' "$result")
if [ "$command" != plan ]; then
  jq -r 'if .report == null then "Nothing was applied." else
    "Applied: \([.report.outcomes[] | select(.status == "done")] | length) done, \([.report.outcomes[] | select(.status != "done")] | length) not done." end' "$result"
  [ -n "$url" ] && echo && echo "URL: $url"
  echo
fi
if [ -n "${GITHUB_OUTPUT:-}" ]; then
  {
    echo "changes=$(jq -r "$plan"' | [.steps[] | select(.action != "no-op")] | length' "$result")"
    echo "monthly-cost=$(jq -r "$plan"' | .cost.monthly // empty' "$result")"
    echo "url=$url"
  } >> "$GITHUB_OUTPUT"
fi
echo "<details><summary>$command result (JSON)</summary>"
echo
echo '```json'
jq . "$result"
echo '```'
echo "</details>"
