"""Admin commands: ``python -m mxserver <command>``.

- ``generate-config [FILE]``: write the commented sample config (stdout by default).
- ``register-user --config FILE USER [--password P] [--admin]``: create an account in the server's database.
- ``check-config --config FILE``: load and validate a config.
- ``purge-remote-media --config FILE --days N``: drop cached remote media not accessed for N days.
- ``port-db --config FILE --to-dsn postgresql://...``: copy the server's SQLite database into an
  empty Postgres database, verify it, and print the config change (see :mod:`mxserver.port_db`).
- ``cluster --config FILE --workers sync=N``: run main, N sync workers and a router in front of
  them on one Postgres database (see :mod:`mxserver.cluster.launch`); ``--router-only --listen
  HOST:PORT`` fronts a cluster that already runs.
- ``routes --format nginx|caddy``: print the reverse-proxy rules of a cluster (what
  ``contrib/nginx/workers.conf`` and ``contrib/caddy/Caddyfile.workers`` hold).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any


def _load(path: str | None) -> Any:
    from mxserver.config import ConfigError, load_config

    try:
        return load_config(path)
    except ConfigError as e:
        sys.exit(f"mxserver: configuration error: {e}")


def cmd_generate_config(args: argparse.Namespace) -> None:
    from mxserver.config import render_sample

    text = render_sample()
    if args.output and args.output != "-":
        with open(args.output, "w", encoding="utf-8") as f:
            f.write(text)
    else:
        sys.stdout.write(text)


def cmd_check_config(args: argparse.Namespace) -> None:
    config = _load(args.config)
    print(f"config OK: server_name {config.server_name}, database {config.database.backend}")


def cmd_register_user(args: argparse.Namespace) -> None:
    from twisted.internet import defer, task

    from mxserver.homeserver import Homeserver, preflight

    config = _load(args.config)
    config.listeners = []
    password = args.password
    if password is None:
        password = getpass.getpass("Password: ")
        if password != getpass.getpass("Confirm password: "):
            sys.exit("mxserver: passwords do not match")
    try:
        preflight(config)
    except Exception as e:
        sys.exit(f"mxserver: cannot open the server's database: {e}")

    async def run(reactor: Any) -> None:
        from mxserver.errors import MatrixError

        hs = Homeserver(config, reactor)
        hs.startService()
        try:
            await hs.when_ready()
            user_id = await hs.registrar.register_user(args.user, password, admin=args.admin)
            print(f"registered {user_id}{' (admin)' if args.admin else ''}")
        except MatrixError as e:
            print(f"mxserver: {e.msg} ({e.errcode})", file=sys.stderr)
            raise SystemExit(1) from None
        finally:
            await hs.stopService()

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))


def cmd_purge_remote_media(args: argparse.Namespace) -> None:
    from twisted.internet import defer, task

    from mxserver.homeserver import Homeserver, preflight

    if args.days < 0:
        sys.exit("mxserver: --days must not be negative")
    config = _load(args.config)
    config.listeners = []
    try:
        preflight(config)
    except Exception as e:
        sys.exit(f"mxserver: cannot open the server's database: {e}")

    async def run(reactor: Any) -> None:
        hs = Homeserver(config, reactor)
        hs.startService()
        try:
            await hs.when_ready()
            before_ts = int(reactor.seconds() * 1000) - args.days * 86_400_000

            def progress(done: int, total: int, freed: int) -> None:
                if done == total or done % 100 == 0:
                    print(f"purged {done}/{total} remote files ({freed} bytes)", flush=True)

            files, freed = await hs.remote_media.purge_older_than(before_ts, progress)
            print(f"done: {files} remote files not used for {args.days} days removed, {freed} bytes freed")
        finally:
            await hs.stopService()

    task.react(lambda reactor: defer.ensureDeferred(run(reactor)))


def cmd_port_db(args: argparse.Namespace) -> None:
    from mxserver.port_db import PortInterrupted, config_block, port, render_checks, verify
    from mxserver.storage.port_db import PortError

    config = _load(args.config)
    if config.database.backend != "sqlite":
        sys.exit(f"mxserver: the config's database is {config.database.backend!r}, not sqlite: nothing to port")
    try:
        if args.verify_only:
            checks = verify(config.sqlite_path, args.to_dsn, progress=sys.stderr)
            print(render_checks(checks))
            if not all(c.ok for c in checks):
                sys.exit("mxserver: the Postgres database differs from the SQLite database")
            return
        print(f"porting {config.sqlite_path} to Postgres", flush=True)
        result = port(config.sqlite_path, args.to_dsn, batch_size=args.batch_size, progress=sys.stderr)
    except PortError as e:
        sys.exit(f"mxserver: port-db: {e}")
    except (KeyboardInterrupt, PortInterrupted):
        print("\ninterrupted: run the same command again to continue where it stopped", file=sys.stderr)
        raise SystemExit(130) from None
    print(render_checks(result.checks))
    for table, column, value in result.sequences:
        print(f"sequence of {table}.{column}: next value {value}")
    rate = result.rows_copied / result.seconds if result.seconds else 0.0
    print(f"{result.rows_copied} rows copied in {result.seconds:.1f} s ({rate:,.0f} rows/s, verification included)")
    if not result.ok:
        sys.exit(
            "mxserver: verification failed: the Postgres database differs from the SQLite database (tables marked "
            "MISMATCH); do not use it: drop it and port again into an empty database"
        )
    print(
        "\nDone. In the config, replace the database section with:\n\n"
        + config_block(args.to_dsn, config.database.pool_size)
        + "\nMedia files and the signing key stay where they are (data_dir). Keep the SQLite file as a backup."
    )


def cmd_cluster(args: argparse.Namespace) -> None:
    from mxserver.cluster.launch import ClusterError, parse_workers, run
    from mxserver.config import ConfigError
    from mxserver.tap import parse_listen

    try:
        if args.router_only:
            if args.workers is not None:
                raise ClusterError("--router-only fronts the workers the config lists: no --workers")
            counts = None
        else:
            if args.listen:
                raise ClusterError("--listen is for --router-only; the router listens on the config's listeners")
            counts = parse_workers(args.workers if args.workers is not None else "sync=1")
        listen = [parse_listen(spec) for spec in args.listen]
        status = run(args.config, counts, args.router_only, listen)
    except (ClusterError, ConfigError) as e:
        sys.exit(f"mxserver: cluster: {e}")
    sys.exit(status)


def cmd_routes(args: argparse.Namespace) -> None:
    from mxserver.cluster.proxy_rules import render

    sys.stdout.write(render(args.format))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mxserver", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate-config", help="write the commented sample config")
    p.add_argument("output", nargs="?", help="file to write (default: stdout)")
    p.set_defaults(func=cmd_generate_config)

    p = sub.add_parser("check-config", help="validate a config file")
    p.add_argument("--config", "-c", required=True)
    p.set_defaults(func=cmd_check_config)

    p = sub.add_parser("register-user", help="create an account directly in the server's database")
    p.add_argument("--config", "-c", help="the server's config (default: the embedded defaults)")
    p.add_argument("user", help="localpart or full user ID")
    p.add_argument("--password", "-p", help="password (prompted for if omitted)")
    p.add_argument("--admin", action="store_true", help="make the user a server admin")
    p.set_defaults(func=cmd_register_user)

    p = sub.add_parser("purge-remote-media", help="delete cached remote media not used for some days")
    p.add_argument("--config", "-c", help="the server's config (default: the embedded defaults)")
    p.add_argument("--days", "-d", type=int, required=True, help="remove what was not accessed for this many days")
    p.set_defaults(func=cmd_purge_remote_media)

    p = sub.add_parser("port-db", help="copy the server's SQLite database into an empty Postgres database")
    p.add_argument("--config", "-c", help="the server's config (default: the embedded defaults)")
    p.add_argument("--to-dsn", required=True, help="the empty Postgres database, e.g. postgresql://user@host/db")
    p.add_argument("--batch-size", type=int, default=10_000, help="rows per batch (one transaction each)")
    p.add_argument("--verify-only", action="store_true", help="only compare an already ported database with its source")
    p.set_defaults(func=cmd_port_db)

    p = sub.add_parser("cluster", help="run main, workers and a router on one Postgres database (development, tests)")
    p.add_argument("--config", "-c", required=True, help="the server's config (database.backend: postgres)")
    p.add_argument("--workers", "-w", help="workers per role, e.g. sync=2 (default sync=1; sync=0: main and the router)")
    p.add_argument("--router-only", action="store_true", help="only the router, in front of the config's running workers")
    p.add_argument("--listen", action="append", default=[], metavar="HOST:PORT", help="where --router-only listens (repeatable)")
    p.set_defaults(func=cmd_cluster)

    p = sub.add_parser("routes", help="print the reverse-proxy rules of a cluster")
    p.add_argument("--format", "-f", choices=["nginx", "caddy"], required=True)
    p.set_defaults(func=cmd_routes)

    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
