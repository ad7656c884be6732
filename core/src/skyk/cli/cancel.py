"""``skyk cancel``: cancel jobs on a cluster."""

from __future__ import annotations

from skyk.cli.argtypes import job_id

HELP = "Cancel jobs on a cluster (their processes on every node are killed)."


def configure(parser) -> None:
    """Add this command's arguments."""
    parser.add_argument("cluster", metavar="NAME", help="the cluster")
    parser.add_argument("jobs", nargs="*", type=job_id, metavar="JOB", help="job ids")
    parser.add_argument("-a", "--all", action="store_true", help="cancel every unfinished job")


def run(args) -> int:
    """Cancel the named jobs, or all with ``-a``."""
    from skyk.cli.launch import check_cluster_name
    from skyk.errors import SpecError
    from skyk.lifecycle.lookup import head_client, require_up
    from skyk.lifecycle.progress import say
    from skyk.state import db

    check_cluster_name(args.cluster, "")
    if args.all and args.jobs:
        raise SpecError("give job ids or -a, not both", hint=f"skyk cancel {args.cluster} 3, or -a for all")
    if not args.all and not args.jobs:
        raise SpecError(f"name the jobs of {args.cluster} to cancel",
                        hint=f"skyk cancel {args.cluster} 3, or -a for all; 'skyk queue {args.cluster}' lists them")
    _, handle = require_up(db.connect(), args.cluster)
    client = head_client(handle)
    if args.jobs:
        for job_id in args.jobs:
            client.job(job_id)  # unknown ids are errors, before anything is cancelled
    cancelled = client.cancel(None if args.all else args.jobs)
    if cancelled:
        say(f"Cancelled job(s) {', '.join(map(str, cancelled))} on cluster {args.cluster}")
    else:
        say("No unfinished job to cancel")
    return 0
