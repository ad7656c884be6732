"""``skyk logs``: a job's output, followed live by default."""

from __future__ import annotations

import argparse

from skyk.cli.argtypes import job_id

HELP = "Print a job's output (the latest job by default), following it until it ends."


def configure(parser) -> None:
    """Add this command's arguments."""
    parser.add_argument("cluster", metavar="NAME", help="the cluster")
    parser.add_argument("job", nargs="?", type=job_id, metavar="JOB", help="job id (default: the latest)")
    parser.add_argument("--follow", action=argparse.BooleanOptionalAction, default=True,
                        help="keep streaming until the job ends (default) or print what exists")
    parser.add_argument("--tail", type=int, metavar="N", help="start with the last N lines")


def run(args) -> int:
    """Stream or print the log."""
    import sys

    from skyk.cli.launch import check_cluster_name
    from skyk.errors import SkykError, SpecError
    from skyk.lifecycle.jobs import follow
    from skyk.lifecycle.lookup import head_client, require_up
    from skyk.state import db

    check_cluster_name(args.cluster, "")
    if args.tail is not None and args.tail < 0:
        raise SpecError(f"--tail must be 0 or more, got {args.tail}", hint="--tail 100")
    _, handle = require_up(db.connect(), args.cluster)
    client = head_client(handle)
    job_id = args.job
    if job_id is None:
        jobs = client.queue()
        if not jobs:
            raise SkykError(f"cluster {args.cluster} has no jobs yet",
                            hint=f"run one with 'skyk exec {args.cluster} CMD'")
        job_id = jobs[0]["id"]
    client.job(job_id)  # an unknown id is an error before any output
    if args.follow:
        return follow(client, args.cluster, job_id, tail=args.tail)
    proc = client.logs(job_id, follow=False, tail=args.tail)
    sys.stdout.buffer.write(proc.stdout.read())
    sys.stdout.flush()
    proc.wait()
    return 0
