"""Process setup shared by the federation benchmarks (``contrib/bench_federation*.py``).

Each benchmark starts mxserver and Synapse processes with ``tests/interop/harness.py``
(the interop tests' launcher) under the benchmark policy of ``shared/servers/README.md``:
logging at WARNING, rate limiters that would throttle a benchmark off. Every process a
script starts is stopped when it exits, on SIGTERM too (:func:`stop_all_at_exit`).
"""

from __future__ import annotations

import atexit
import json
import shutil
import signal
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.interop import harness  # noqa: E402

NAMES = {"mxserver": "mxserver", "synapse": "Synapse"}


def deep_merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """``base`` with ``extra`` merged over it (dicts merge, other values replace); in place."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            deep_merge(base[key], value)
        else:
            base[key] = value
    return base


class BenchMxServer(harness.MxServer):
    """mxserver as the interop tests run it, logging warnings only; ``extra`` is merged over its config."""

    def __init__(self, root: Path, extra: dict[str, Any] | None = None) -> None:
        self.extra = extra or {}  # before super().__init__(), which writes the config
        super().__init__(root)

    def config(self) -> dict[str, Any]:
        conf = super().config()
        conf["log"]["level"] = "WARNING"
        return deep_merge(conf, self.extra)


class BenchSynapse(harness.SynapseServer):
    """Synapse as the interop tests run it, logging warnings only, message/join/registration limiters off;
    ``extra`` is merged over its extra config."""

    def __init__(self, root: Path, python: str, extra: dict[str, Any] | None = None) -> None:
        self.extra = extra or {}  # before super().__init__(), which writes the extra config
        super().__init__(root, python)

    def extra_config(self) -> dict[str, Any]:
        conf = super().extra_config()
        log_config = Path(conf["log_config"])
        lc = json.loads(log_config.read_text())
        lc["root"]["level"] = "WARNING"
        log_config.write_text(json.dumps(lc))
        big = {"per_second": 1e6, "burst_count": 1e6}
        conf.setdefault("rc_message", big)
        conf.setdefault("rc_joins", {"local": big, "remote": big})
        conf.setdefault("rc_joins_per_room", big)
        conf.setdefault("rc_registration", big)
        return deep_merge(conf, self.extra)


_running: list[harness.ServerProcess] = []
_synapse_python: list[str] = []


def synapse_python() -> str:
    """The Python of the Synapse install (installed by the shared adapter on first use)."""
    if not _synapse_python:
        _synapse_python.append(harness.install_synapse())
    return _synapse_python[0]


def new_server(kind: str, root: Path, extra: dict[str, Any] | None = None) -> harness.ServerProcess:
    """An unstarted server of ``kind`` (``mxserver`` or ``synapse``) with its data under ``root``;
    ``extra`` is merged over its configuration (mxserver's config, Synapse's extra config)."""
    if kind == "mxserver":
        return BenchMxServer(root, extra)
    return BenchSynapse(root, synapse_python(), extra)


def start_server(kind: str, root: Path, extra: dict[str, Any] | None = None) -> harness.ServerProcess:
    """A fresh, started server of ``kind`` with its data under ``root`` (one folder per
    instance: the harness names the folder after the kind, so two of a kind need two roots);
    ``extra``: see :func:`new_server`."""
    root.mkdir(parents=True)
    server = new_server(kind, root, extra)
    _running.append(server)  # before start(): a start that fails half-way is stopped too
    server.start()
    return server


def stop_server(server: harness.ServerProcess) -> None:
    server.stop(timeout=20)
    if server in _running:
        _running.remove(server)


def stop_all() -> None:
    """Stop every server :func:`start_server` started and that is still running."""
    while _running:
        server = _running.pop()
        try:
            server.stop(timeout=20)
        except Exception as e:  # noqa: BLE001 - keep stopping the others
            print(f"stopping {server.kind} failed: {e!r}", file=sys.stderr)


def _on_sigterm(signum: int, frame: Any) -> None:
    raise SystemExit(128 + signum)  # unwinds through the finally blocks, which stop the servers


def stop_all_at_exit() -> None:
    """Nothing outlives the script: stop the servers at exit and on SIGTERM."""
    signal.signal(signal.SIGTERM, _on_sigterm)
    atexit.register(stop_all)


def interrupted(root: Path) -> None:
    """A bench script stopped by the user: stop the servers, keep the work dir (the caller re-raises)."""
    print("\ninterrupted: stopping the servers", file=sys.stderr)
    stop_all()
    print(f"data and logs kept in {root}", file=sys.stderr)


def finish(root: Path, results: Any, json_path: str | None, keep: bool, failed: bool) -> int:
    """A bench script's ending: the JSON written if asked, the work dir kept if asked or if a
    run failed (its logs), else removed; the exit status."""
    if json_path:
        Path(json_path).write_text(json.dumps(results, indent=1, default=str))
    if keep or failed:
        print(f"data and logs kept in {root}")
    else:
        shutil.rmtree(root, ignore_errors=True)
    return 1 if failed else 0


def run_benchmark(
    name: str,
    args: Any,
    runs: Callable[[Path], Iterable[dict[str, Any]]],
    report: Callable[[dict[str, Any], Any], None],
    label: Callable[[dict[str, Any]], str] = lambda r: NAMES[r["server"]],
) -> int:
    """A comparison script's whole run: refuse Synapse without the shared folder, make the work
    dir, collect what ``runs(root)`` yields (one dict per server run; ``"error"`` when it
    failed), stop every server however it ends, print ``report``, the failures (named by
    ``label``) and finish; the exit status."""
    missing = harness.shared_missing_reason()
    if missing and "synapse" in args.server:
        print(missing, file=sys.stderr)
        return 2
    stop_all_at_exit()
    root = Path(tempfile.mkdtemp(prefix=f"mxserver-bench-{name}-"))
    out: dict[str, Any] = {"args": dict(vars(args)), "runs": []}
    try:
        for result in runs(root):
            out["runs"].append(result)
    except (KeyboardInterrupt, SystemExit):
        interrupted(root)
        raise
    finally:
        stop_all()
    report(out, args)
    failed = [r for r in out["runs"] if "error" in r]
    for r in failed:
        print(f"FAILED ({label(r)}): {r['error'][:2000]}")
    return finish(root, out, args.json, args.keep, bool(failed))


def percentile(sorted_vals: list[float], q: float) -> float:
    """The q-quantile (0..1) of sorted values, with linear interpolation."""
    if len(sorted_vals) == 1:
        return sorted_vals[0]
    pos = q * (len(sorted_vals) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_vals) - 1)
    return sorted_vals[lo] + (sorted_vals[hi] - sorted_vals[lo]) * (pos - lo)


def fmt(v: Any, spec: str) -> str:
    """``v`` formatted, or "-" when a run left it out."""
    return format(v, spec) if isinstance(v, (int, float)) else "-"
