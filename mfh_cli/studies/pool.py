"""The sweep's worker processes: started so that Ctrl-C and the end of the sweep's process reach them, and stopped
at once on an interrupt (`mfh ablate` and `mfh tune` share them)."""

from __future__ import annotations

import os
import signal
import threading
import time
from concurrent.futures import ProcessPoolExecutor

PARENT_CHECK_SECONDS = 0.5


def stop_workers(pool: ProcessPoolExecutor) -> None:
    """Cancel the queued runs and end the running ones now. A run a worker was writing is in runs/.partial/, never
    in place, and is swept by the next run that writes."""
    workers = list((pool._processes or {}).values())  # no public handle on the workers before Python 3.14
    pool.shutdown(wait=False, cancel_futures=True)
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.join()


def init_worker(parent: int) -> None:
    """Worker initializer: leave SIGINT to the sweep's process (a terminal's Ctrl-C reaches the whole process
    group; the sweep then stops its workers itself), and end with the sweep's process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    exit_with_parent(parent)


def exit_with_parent(parent: int) -> None:
    """Worker initializer: end this worker once the sweep's process is gone (after a `kill -9` of `mfh ablate`
    alone it would otherwise go on training runs nobody collects; a run it was writing stays unfinished)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(PARENT_CHECK_SECONDS)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()
