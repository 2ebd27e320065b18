#!/usr/bin/env bash
# Builds the mixed benchmark text from files on every Debian machine: the
# package copyright notices (English, names with accents, code-like license
# text) interleaved with the project's seed articles (Chinese and English).
#   make-corpus.sh OUT.txt [MEGABYTES=4] [SEEDS_DIR=../shared/seeds]
set -euo pipefail
out=$1
mb=${2:-4}
seeds=${3:-$(dirname "$0")/../../../shared/seeds}
limit=$((mb * 1024 * 1024))
tmp=$(mktemp "$out.XXXXXX")
trap 'rm -f "$tmp"' EXIT
size=0
n=0
seed_files=()
[ -d "$seeds" ] && seed_files=("$seeds"/*.txt)
# Sorted for a deterministic corpus; only files that are valid UTF-8.
while IFS= read -r f; do
  iconv -f UTF-8 -t UTF-8 "$f" >/dev/null 2>&1 || continue
  cat "$f" >>"$tmp"
  n=$((n + 1))
  if [ $((n % 25)) -eq 0 ] && [ ${#seed_files[@]} -gt 0 ]; then
    cat "${seed_files[$(( (n / 25) % ${#seed_files[@]} ))]}" >>"$tmp"
  fi
  size=$(stat -c %s "$tmp")
  [ "$size" -ge "$limit" ] && break
done < <(find /usr/share/doc -name copyright -type f | LC_ALL=C sort)
head -c "$limit" "$tmp" | iconv -f UTF-8 -t UTF-8 -c >"$out.part"
mv "$out.part" "$out"
echo "make-corpus: $(stat -c %s "$out") bytes, $(LC_ALL=C grep -c -P '[^\x00-\x7F]' "$out") lines with non-ASCII" >&2
