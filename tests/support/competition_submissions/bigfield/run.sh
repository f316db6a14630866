#!/usr/bin/env bash
# Defense whose result.csv has a 200 KB field in its first row, then honest rows.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd -P)"
toy=("${PYTHON:-python3}" "$here/../toy.py")
"${PYTHON:-python3}" -c "import sys; open(sys.argv[1], 'w').write('x' * 200000 + ',1\n')" "$2.head"
"${toy[@]}" decode "$1" "$2.tail"
cat "$2.head" "$2.tail" > "$2"
rm "$2.head" "$2.tail"
