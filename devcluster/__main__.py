"""CLI: `python -m devcluster serve ...` and `python -m devcluster backfill ...`."""

from __future__ import annotations

import argparse
import sys
import time


def _backfill(args: argparse.Namespace) -> int:
    from . import metrics
    from .server import DevCluster

    dc = DevCluster(fleet=args.fleet, flavour=args.flavour, seed=args.seed)
    end = float(args.end) if args.end else time.time()
    start = end - args.days * 86400
    series = dc.dcgm.backfill(args.include_vms)
    if args.out == "-":
        n = metrics.write_openmetrics(sys.stdout, series, start, end, args.step, args.seed)
    else:
        with open(args.out, "w") as fh:
            n = metrics.write_openmetrics(fh, series, start, end, args.step, args.seed)
    print(
        f"backfill: {len(series)} GPUs, {n} samples, {args.days} day(s) at {args.step}s "
        f"-> {args.out}",
        file=sys.stderr,
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devcluster", description=__doc__)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the fake Cozystack management cluster API")
    s.add_argument("--port", type=int, default=0, help="0 picks a free port")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on")
    s.add_argument(
        "--kubeconfig-server",
        default=None,
        help="server URL written into the kubeconfig (default https://127.0.0.1:PORT)",
    )
    s.add_argument("--fleet", default="demo", help="demo | scale | path to a fleet YAML file")
    s.add_argument("--flavour", default="current", choices=("current", "legacy", "head"))
    s.add_argument("--kubeconfig-out", default=None, help="default var/devcluster/kubeconfig")
    s.add_argument(
        "--state", default=None, help="JSON state file: loaded at start, saved on change and exit"
    )
    s.add_argument("--seed", type=int, default=1)
    s.add_argument("--speed", type=float, default=1.0, help="divides every simulated delay")
    s.add_argument(
        "--faults", default=None, help='JSON, e.g. {"rules":[{"verb":"list","error_429":0.5}]}'
    )
    s.add_argument(
        "--watch-history",
        type=int,
        default=20000,
        help="watch events kept; a watch from an older resourceVersion gets 410 Gone",
    )
    s.add_argument("--verbose", action="store_true", help="log every request to stderr")
    # Realism timings, seconds at --speed 1 (divided by --speed); also knobs of /devcluster/faults.
    for flag, knob, what in (
        ("--cache-lag", "cache_lag", "an app read right after a write may be stale (404/conflict)"),
        (
            "--continue-ttl",
            "continue_ttl",
            "wall seconds (not scaled) until a continue token expires (410)",
        ),
        ("--event-ttl", "event_ttl", "events are garbage-collected"),
        ("--stop-grace", "stop_grace", "a stopping VM keeps its pod (and GPUs)"),
        ("--uninstall-time", "uninstall", "Helm uninstall after the pods are gone"),
        ("--scale-down-unneeded", "scale_down_unneeded", "autoscaler removes unneeded workers"),
        ("--helm-retry", "helm_retry", "a failed Helm install/upgrade is retried"),
        ("--gpu-ready", "gpu_ready", "a tenant cluster's worker gets nvidia.com/gpu allocatable"),
    ):
        s.add_argument(flag, dest=f"knob_{knob}", type=float, default=None, help=what)
    b = sub.add_parser("backfill", help="write N days of DCGM series as OpenMetrics text")
    b.add_argument("--fleet", default="demo")
    b.add_argument("--flavour", default="current", choices=("current", "legacy", "head"))
    b.add_argument("--days", type=float, default=1.0)
    b.add_argument("--step", type=float, default=60.0, help="seconds between samples")
    b.add_argument("--end", default=None, help="unix time of the last sample (default now)")
    b.add_argument("--seed", type=int, default=1)
    b.add_argument("--include-vms", action="store_true", help="also GPU VMs (guest-agent stand-in)")
    b.add_argument("--out", default="-")
    args = p.parse_args(argv)
    if args.cmd == "serve":
        from .server import run

        return run(args)
    return _backfill(args)


if __name__ == "__main__":
    sys.exit(main())
