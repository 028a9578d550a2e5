#!/bin/bash
# Alternate `conveyor bench` between the commit before the architecture changes (old) and
# main (new): Redis (a fresh server each run) and SQLite, three pairs each.
set -u
OUT=/work/bench-pairs/results
mkdir -p $OUT
for round in 1 2 3; do
  for side in old new; do
    if [ $side = old ]; then BIN=/work/bench-old/.venv/bin; else BIN=/work/main/.venv/bin; fi
    dir=$(mktemp -d /work/bench-pairs/redis.XXXX)
    port=$((20000 + RANDOM % 20000))
    redis-server --port $port --bind 127.0.0.1 --save '' --appendonly yes --appendfsync everysec --dir $dir --daemonize yes --logfile $dir/log >/dev/null
    sleep 0.5
    $BIN/conveyor --log-level warning bench --url redis://127.0.0.1:$port/0 --jobs 20000 --concurrency 200 --no-io --rate 1000 --latency-seconds 2 --json $OUT/redis-$side-$round.json > $OUT/redis-$side-$round.txt 2>&1
    redis-cli -p $port shutdown nosave >/dev/null 2>&1
    rm -rf $dir
    db=$(mktemp -d /work/bench-pairs/sqlite.XXXX)
    $BIN/conveyor --log-level warning bench --url sqlite:///$db/b.db --jobs 20000 --concurrency 200 --no-io --rate 1000 --latency-seconds 2 --json $OUT/sqlite-$side-$round.json > $OUT/sqlite-$side-$round.txt 2>&1
    rm -rf $db
    echo "done $side $round"
  done
done
