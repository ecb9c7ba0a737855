"""Scale-out on Ray (`serve --ray`): one head, many workers.

The serving process stays the head: the API, the SQLite store and the queue are as without Ray,
and the store is the truth. Pieces of jobs (chunks of a pipeline's plan, or single frames where
frames do not depend on each other) run in Ray actors, one per GPU (CPU workers where there is
none), which keep their models warm between pieces. Frames come back to the head, which writes
them atomically as the single-process worker does.

    options    the `--ray` value (local:N or a cluster's address)
    messages   what travels between the head and a worker (pickled by Ray)
    pieces     a job's plan cut into pieces, and which piece waits for which
    scheduler  the head's bookkeeping: which piece runs where, job states, frames, cancel
    actor      the worker side: a Ray actor running pieces through the real pipelines
    slots      one thread per worker on the head: starting, feeding, restarting its actor
    runner     ClusterWorker, the head's stand-in for the single-process Worker

Only `runner`, `slots` and `actor` touch Ray, and they import it inside functions: a backend
started without `--ray` never imports it (it is optional: requirements/ray.txt).
"""
