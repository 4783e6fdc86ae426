"""One replica's Monitor over the NATS log, as its own process, for the lease tests:
``python -m tests.cluster_proc STORE_URL STREAM PARTITIONS REPLICA STATUS_FILE PAUSE_FLAG``.
Writes the partitions it holds and the commits refused to STATUS_FILE every tick. When
PAUSE_FLAG exists after a read that returned records, it removes it and SIGSTOPs itself
there, between the read and the commit: where a real pause (GC, a VM migration) is fatal.
Its leases are renewed by a heartbeat thread, as in the service: SIGSTOP stops it too."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

from monitoring.cluster import Heartbeat, PartitionOwner, cluster_tick
from monitoring.log.consumer import NatsEventLog
from monitoring.log.jetstream import StreamSpec
from monitoring.log.reader import Batch, Checkpoint
from monitoring.monitor import Monitor
from store import EventIds, LeaseStore, make_engine

LEASE_SECONDS = 2.0
TICK_SECONDS = 0.1


class PausingLog(NatsEventLog):
    pause_flag: Path

    def read(self, checkpoint: Checkpoint, max_events: int) -> Batch:
        batch = super().read(checkpoint, max_events)
        if batch.lines and self.pause_flag.exists():
            self.pause_flag.unlink()
            os.kill(os.getpid(), signal.SIGSTOP)
        return batch


def main(url: str, stream: str, partitions: str, replica: str, status: str, flag: str) -> None:
    engine = make_engine(url)
    owner = PartitionOwner(LeaseStore(engine), replica, int(partitions), LEASE_SECONDS,
                           max_tick=LEASE_SECONDS * 5)
    log = PausingLog(StreamSpec(url="nats://127.0.0.1:4222", name=stream,
                                partitions=int(partitions)), EventIds(engine), owner.leases)
    log.pause_flag = Path(flag)
    loop = Monitor(engine, log, class_labels_of=lambda m, v: None, replica=replica)
    loop.load()
    Heartbeat(owner.beat, LEASE_SECONDS / 3).start()
    while True:
        cluster_tick(loop, owner)
        tmp = Path(status + ".tmp")
        tmp.write_text(json.dumps({"held": sorted(owner.held), "fenced": owner.fenced,
                                   "duplicates": log.duplicates, "at": time.time()}))
        tmp.replace(status)
        time.sleep(TICK_SECONDS)


if __name__ == "__main__":
    main(*sys.argv[1:])
