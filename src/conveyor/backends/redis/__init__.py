"""The Redis store (``redis://``, ``rediss://``, ``unix://``; Redis 7+, or Redis Cluster).

Data model
----------
Every key of one queue carries the hash tag ``{q:NAME}``, so a queue lives in one
cluster slot and different queues spread over a cluster. With the default prefix
``conveyor``:

``conveyor:{q:NAME}:s:P``         work stream of priority level ``P`` (entries ``j=<job id>``),
                                   consumer group ``conveyor`` read with NOACK; each read
                                   trims (XTRIM MINID) what it delivered, so a stream holds
                                   exactly the entries not delivered yet
``conveyor:{q:NAME}:prios``       zset of the queue's priority levels
``conveyor:job:ID``               hash: the job's record (fields in ``scripts/lib.lua``);
                                   gets a TTL (result retention) once finished; on a
                                   cluster ``conveyor:{q:NAME}:job:ID``
``conveyor:{q:NAME}:delayed``     zset id -> run_at: delayed jobs and retry backoff
``conveyor:{q:NAME}:leases``      zset lease token -> deadline, one token per fetch call
                                   (``<number>@<worker id>``; a running job's field ``k``);
``conveyor:{q:NAME}:leases:T``    set of the ids leased under token ``T`` (running jobs);
                                   ``:leases:next`` counts tokens
``conveyor:{q:NAME}:i:STATUS``    lex zsets of ids (``pending``, ``completed``, ``failed`` -
                                   the dead-letter set - and ``cancelled``; running jobs are
                                   the lease sets) for newest-first listings with a cursor
``conveyor:{q:NAME}:idem:KEY``    ``job id|expires_at`` (SET NX semantics inside the enqueue
                                   script, with a PX TTL)
``conveyor:{q:NAME}:wake``        a one-entry stream idle workers block on (XREAD BLOCK)
``conveyor:{q:NAME}:conf``        hash: queue settings, ``max`` (maximum length) and ``paused``;
                                   read inside the enqueue, fetch, probe and stats scripts
``conveyor:{workers}:info``       hash worker id -> registration JSON, with
``conveyor:{workers}:expiry``     zset worker id -> expiry (pruned by ``workers.lua``)
``conveyor:cursor:NAME``          a named event-feed position (webhook deliverer)
``conveyor:queues``               set of queue names
``conveyor:marker``               when the store was first opened, never changed: a server
                                   that lost its data has lost it too (``_watch.py``)
``conveyor:jobq:ID``              on a cluster only: ``priority:queue`` of a job, for calls
                                   that know only its id (get, cancel, retry); deleted by
                                   ``purge``. A single server finds the record by id.
``conveyor:events``               the event feed: one entry per script call holding that
                                   call's events (``a`` time, ``e`` JSON array of
                                   ``[type, job id, data]`` or a compact form; ``p`` the id
                                   of the entry before; an event's id is the entry id plus
                                   its index, ``e`` marking an entry's last), at most 1,000
                                   events an entry; trimmed by age (``MINID ~`` on every
                                   write, exact in ``purge``) to the event retention; on a
                                   cluster, one feed per queue: ``conveyor:{q:NAME}:events``
``conveyor:events:last``          the id of the feed's newest entry (``p`` of the next)
``conveyor:{sched}:defs``         hash: schedule id -> its definition (JSON); ``:next`` and
                                   ``:last`` hold each schedule's next run and
                                   ``last run|last job id``, ``:version`` counts edits
                                   (script ``schedules``; all four share one slot)

Why this layout: a step that must be atomic (lease a job, store an outcome, check an
idempotency key and create the job) is one Lua script, and on a cluster a script may
only touch one slot. So on a cluster everything such a step touches is tagged by
queue, and the only global keys (queue set, routes) are written next to the scripts in
the same pipeline; routes are written before the enqueue script, so a stored job always
has one. A single server has no slots: job records and the event feed are global there,
so a record is found by its id alone, without a route to write per job.

Consequences, by design:

- Idempotency keys are remembered per queue (like BullMQ job ids): the same key sent to
  two queues makes two jobs. Within a queue, concurrent submits make exactly one.
- Scripts declare their keys in KEYS, except job hashes that fetch, probe and purge
  discover inside the script (ids read from a stream or an index), those enqueue and
  complete are given ids for (packed with the rest of the batch in one JSON argument)
  and the existing job of an idempotency hit: those names are derived from the declared
  prefix and, on a cluster, carry the same hash tag, so they are always in the slot
  being served.
- On a cluster the event feed is one stream per queue, merged on read: order is exact
  within a queue, by time across queues.

Scripts and commands per job
----------------------------
All scripts (``scripts/*.lua``, each prefixed with ``lib.lua``) handle whole batches and
are run with EVALSHA (loaded at ``open``, reloaded on NOSCRIPT). Each event-feed write
below is, per batch, a GET of ``events:last``, the XADD (which trims by ``MINID ~``: the
retention, by entry id time) and a SET of ``events:last``.

- enqueue (batch): one pipeline: (on a cluster, ``SET`` route per job +) one ``enqueue``
  call per queue
  (HSET and XADD per job, SET for an idempotency key; one variadic ZADD to the pending
  index and one event-feed XADD for the batch).
- fetch (batch): one ``fetch`` call: jobs of expired lease tokens first (``attempts +
  1``, moved to ``failed`` with reason ``lease_expired`` past the retry budget, or back
  to their stream beyond the call's share), due delayed jobs promoted, then
  ``XREADGROUP COUNT n NOACK`` per priority level and one ``XTRIM MINID`` past the last
  entry read; each job: HMGET of the fields a worker needs, HSET of two fields (status,
  and the lease: attempts, start and token in one; the lease's deadline and owner are
  the token's); then one
  INCR (the new token), SADD and ZADD (the lease), ZREM (pending index) and one event
  XADD for the batch. Fetching several queues first runs ``probe`` per queue (one
  pipeline) to split the batch by priority across queues.
- complete (batch): one ``complete`` call per queue, the outcomes packed in one JSON
  argument, fenced by one SMISMEMBER per lease token (an outcome sent without a token,
  by a process that did not fetch the job, is fenced by the record's status + owner +
  attempt: one HMGET); HSET and PEXPIRE per job; one SREM per token, ZADD per index
  and one event XADD.
- purge: reads the finished indexes oldest id first (UUIDv7 ids sort by creation time)
  up to the ids created by the cutoff, deleting records finished before it and the
  index entries of records already expired (TTL); no per-job completion-time zset.
- renew (batch): one ``renew`` call per queue: HMGET per job (still this owner's and
  attempt's?), one ZADD per token.

Time is the store's: scripts read Redis ``TIME`` unless the backend was built with
``clock=`` (tests), whose time is passed in ARGV. ``XREAD BLOCK`` timeouts are coarse
in Redis (checked every 1/hz s), so due times are timed locally.

Lease expiry is judged from the lease zset (deadlines), not from PEL idle time, so
reclaiming honours the store clock. The pending list is not used at all: the script
that reads an entry leases its job in the same atomic step, so once read, an entry
has done its work (the job's lease, not the entry, brings it back if its worker dies),
and NOACK spares the server a pending-list entry, its replication (an XCLAIM per entry
in the AOF) and an XACK per job. Nothing is trimmed that was not delivered: MINID stops
just past the last entry the same call read.

Cluster: add ``?cluster=1`` to the URL to use ``redis.asyncio.cluster.RedisCluster``.

Entries a work stream holds that Conveyor did not write (hand-written, garbage, a pickle
payload) are dead-lettered on first delivery: a ``failed`` record with reason
``undecodable`` and a hex preview of the raw fields; nothing is ever unpickled.
"""

from __future__ import annotations

from conveyor.backends.redis._keys import RedisOptions, parse_redis_url
from conveyor.backends.redis.backend import RedisBackend

__all__ = ["RedisBackend", "RedisOptions", "parse_redis_url"]
