"""Node name search over HTTP through gunicorn (issue 17 items 2 and 7): PostgreSQL with
DATABASE_URL (its name pieces' index, NodeNameGram), else SQLite (figures with a ``.sqlite``
suffix; it scans).

For each fleet size, the node table holds that many GPUs' servers (8 GPUs each, named like
devcluster's scale fleet: gpu-a100-00001..., then gpu-h100-..., then gpu-l40s-..., 30/20/50 %),
and gunicorn (the web container's command: its config file, 2 workers, production settings)
serves the node list. Each term is asked for WARMUP times untimed, then REQUESTS times, the
terms interleaved in one loop (a burst from another process on this shared machine lands on
every term alike); p50 and p95 are of those requests, with the load average noted. Terms: an
exact name, and broad ones (``l40s-0``: its matches all come after every A100 and H100 in name
order; ``l40s``: half the fleet; ``gpu``: all of it).

Sizes here stop at 100,000 GPUs (12,500 servers): the shared 2-core machine of this project
is not for a 1,000,000-GPU run; ``--sizes`` takes more where there is room.

    DATABASE_URL=postgres://... .venv/bin/python bench/bench_search.py [--sizes 1000,100000]

With SQLite, gunicorn's two workers read the database file the bench writes (VAR_DIR).

Writes bench/results/search.md and the inventory.nodes_search_* figures of bench/results.json.
"""

from __future__ import annotations

import argparse
import http.client
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlencode

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from bench.django_env import setup_production_django  # noqa: E402

RESULTS_DIR = ROOT / "bench" / "results"
REQUESTS = 30
WARMUP = 3
P95_TARGET_MS = 100.0
RATIO_TARGET = 1.5
MIX = (("a100", 0.3), ("h100", 0.2), ("l40s", 0.5))  # devcluster's scale fleet, in name order


def terms(servers: int) -> dict[str, str]:
    l40s = round(servers * 0.5)
    return {
        "exact": f"gpu-l40s-{max(1, l40s // 2):05d}",
        "broad_late": "l40s-0",
        "broad_half": "l40s",
        "broad_all": "gpu",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def percentile(values: list[float], pct: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, round(pct / 100 * len(ordered)) - 1)]


def load_fleet(gpus: int) -> list[str]:
    """The node table of a ``gpus``-GPU fleet (one cluster), analysed; its names."""
    from django.db import connection

    from gpus.inventory.choices import NodeHealth
    from gpus.inventory.models import Cluster, Node

    Cluster.objects.all().delete()
    cluster = Cluster.objects.create(name=f"search-{gpus}")
    servers = gpus // 8
    names = []
    for short, share in MIX:
        names += [f"gpu-{short}-{i:05d}" for i in range(1, round(servers * share) + 1)]
    Node.objects.bulk_create(
        [Node(cluster=cluster, name=name, health=NodeHealth.READY, gpu_installed=8,
              gpu_free=i % 9) for i, name in enumerate(names)],
        batch_size=5000,
    )  # fmt: skip
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute("VACUUM ANALYZE inventory_node")
            cursor.execute("VACUUM ANALYZE inventory_nodenamegram")
        else:
            cursor.execute("ANALYZE inventory_node")
    return names


def session_cookie() -> str:
    from django.conf import settings
    from django.contrib.auth import (
        BACKEND_SESSION_KEY,
        HASH_SESSION_KEY,
        SESSION_KEY,
        get_user_model,
    )
    from django.contrib.sessions.backends.db import SessionStore

    user, _ = get_user_model().objects.get_or_create(
        username="bench-admin", defaults={"is_staff": True}
    )
    session = SessionStore()
    session[SESSION_KEY] = str(user.pk)
    session[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    session[HASH_SESSION_KEY] = user.get_session_auth_hash()
    session.create()
    return f"{settings.SESSION_COOKIE_NAME}={session.session_key}"


def start_gunicorn(port: int, log: Path) -> subprocess.Popen:
    env = {**os.environ, "GUNICORN_BIND": f"127.0.0.1:{port}", "GUNICORN_WORKERS": "2"}
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", "python:hikube_portal.gunicorn_conf",
         "hikube_portal.wsgi:application"],
        cwd=ROOT, env=env, stdout=log.open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    for _ in range(300):
        if server.poll() is not None:
            raise RuntimeError(log.read_text()[-3000:])
        try:
            status, _ = get(port, "/healthz", "")
            if status == 200:
                return server
        except OSError:
            pass
        time.sleep(0.1)
    raise RuntimeError("gunicorn did not answer")


def get(port: int, path: str, cookie: str) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path, headers={"Cookie": cookie, "Host": "127.0.0.1"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def measure(port: int, cookie: str, names: list[str], requests: int) -> dict[str, dict]:
    urls = {label: "/inventory/nodes/?" + urlencode({"q": term})
            for label, term in terms(len(names)).items()}  # fmt: skip
    expected = {label: next((n for n in sorted(names) if term.lower() in n), "")
                for label, term in terms(len(names)).items()}  # fmt: skip
    timings: dict[str, list[float]] = {label: [] for label in urls}
    loads = [os.getloadavg()[0]]
    for i in range(WARMUP + requests):
        for label, url in urls.items():
            start = time.perf_counter()
            status, body = get(port, url, cookie)
            elapsed = (time.perf_counter() - start) * 1000
            assert status == 200, (status, body[:300])
            # The first match in name order heads the page: the search read the right rows.
            assert expected[label].encode() in body, (label, expected[label])
            if i >= WARMUP:
                timings[label].append(elapsed)
        loads.append(os.getloadavg()[0])
    load = f"load {min(loads):.2f}-{max(loads):.2f}"
    return {
        label: {
            "p50": statistics.median(values),
            "p95": percentile(values, 95),
            "load": load,
            "term": terms(len(names))[label],
        }
        for label, values in timings.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="1000,100000")
    parser.add_argument("--requests", type=int, default=REQUESTS)
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    postgres = os.environ.get("DATABASE_URL", "").startswith("postgres")
    suffix = "" if postgres else ".sqlite"  # as bench_inventory.py names SQLite's figures
    results: dict[int, dict[str, dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        var_dir = Path(tmp)
        setup_production_django(var_dir, allowed_hosts="127.0.0.1")
        from django.core.management import call_command

        call_command("migrate", verbosity=0)
        call_command("collectstatic", "--noinput", verbosity=0)
        cookie = session_cookie()
        port = free_port()
        server = start_gunicorn(port, var_dir / "gunicorn.log")
        try:
            for gpus in sizes:
                names = load_fleet(gpus)
                print(f"{gpus:,} GPUs ({len(names):,} servers)...", flush=True)
                results[gpus] = measure(port, cookie, names, args.requests)
                print(results[gpus], flush=True)
        finally:
            server.terminate()
            server.wait(20)
    from bench.results import figure, record

    figures = []
    base = results[min(sizes)]
    for gpus, pages in results.items():
        for label, r in pages.items():
            name = f"inventory.nodes_search_{label}{suffix}.http_p95_ms@{gpus}"
            figures.append(
                figure(name, round(r["p95"], 1), "ms", f"<= {P95_TARGET_MS:g}",
                       r["p95"] <= P95_TARGET_MS, p50=round(r["p50"], 1), term=r["term"],
                       requests=args.requests, load_average=r["load"],
                       served_by="gunicorn, 2 workers, production settings")
            )  # fmt: skip
            if gpus != min(sizes):
                ratio = r["p95"] / base[label]["p95"]
                figures.append(
                    figure(f"inventory.nodes_search_{label}{suffix}.http_p95_ratio@{gpus}",
                           round(ratio, 2), "x",
                           f"<= {RATIO_TARGET:g} (p95 at {gpus:,} / p95 at {min(sizes):,} GPUs)",
                           ratio <= RATIO_TARGET, load_average=r["load"],
                           p50_ratio=round(r["p50"] / base[label]["p50"], 2))
                )  # fmt: skip
    record(figures)
    RESULTS_DIR.mkdir(exist_ok=True)
    lines = [
        "# Node name search over HTTP",
        "",
        f"gunicorn (2 workers, production settings) on {'PostgreSQL' if postgres else 'SQLite'}; "
        f"{args.requests} requests per "
        f"term after {WARMUP} untimed, terms interleaved; sizes {', '.join(f'{s:,}' for s in sizes)}"
        " GPUs; the machine is shared (2 cores): the load average is next to each figure.",
        "",
        "The page: one query per table (the filter's cluster and model choices as plain queries, "
        "not server-side cursors), the column names translated once per table, and a term's "
        "count stopped past 1,000 matches (`More than 1,000 nodes`: a broad term on a large fleet "
        "would count half of it), cached per snapshot. The search itself: see "
        "`gpus.inventory.selectors.node_page`.",
        "",
        "| figure | value | unit | p50 | target | ok | load |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {f['name']} | {f['value']} | {f['unit']} | {f.get('p50', '')} | {f['target']} | "
            f"{'ok' if f['ok'] else 'MISS'} | {f['load_average']} |"
            for f in figures
        ],
    ]
    (RESULTS_DIR / f"search{'' if postgres else '-sqlite'}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
