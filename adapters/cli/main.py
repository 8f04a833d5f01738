"""`turnchart` command line: validate | render | serve | simulate | bench.

Exit codes: 0 success, 1 the chart (or scenario) is invalid, 2 usage or I/O
error, 141 (128 + SIGPIPE, as a shell reports for any Unix tool) when the reader
of stdout went away (`turnchart paths … | head -1`), with nothing printed.
Diagnostics go to stdout in `PATH:LINE:COL: CODE message` form so editors and
CI can parse them; `--format json` gives the same as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.chart.chart import load_chart
from engine.chart.errors import ChartErrors
from engine.chart.registry import Registry
from engine.runtime.behaviours import default_registry

if TYPE_CHECKING:
    from adapters.config import Settings

EXIT_OK, EXIT_INVALID, EXIT_USAGE = 0, 1, 2
EXIT_PIPE = 141  # 128 + SIGPIPE: stdout's reader closed the pipe (`| head`)
EXIT_INTERRUPTED = 130  # 128 + SIGINT: Ctrl-C


def _registry(spec: str | None) -> Registry:
    """`--registry pkg.module:factory` → that factory's Registry; default otherwise
    (adapters/registry_spec.py; a bad spec raises RegistrySpecError, one line)."""
    if not spec:
        return default_registry()
    from adapters.registry_spec import load_registry
    return load_registry(spec)


def cmd_validate(args: argparse.Namespace) -> int:
    registry = _registry(args.registry)
    results: list[dict[str, Any]] = []
    code = EXIT_OK
    for path in args.paths:
        result: dict[str, Any] = {"path": path, "valid": True, "errors": [], "warnings": []}
        try:
            chart = load_chart(path, registry)
            result["warnings"] = [w.to_dict() for w in chart.warnings]
            result["version_hash"] = chart.version_hash
        except ChartErrors as exc:
            result.update(valid=False, errors=[e.to_dict() for e in exc.errors],
                          warnings=[w.to_dict() for w in exc.warnings])
            code = max(code, EXIT_INVALID)
        except (OSError, UnicodeDecodeError) as exc:
            result.update(valid=False, io_error=f"cannot read {path}: {exc}")
            code = EXIT_USAGE
        results.append(result)
    if args.format == "json":
        print(json.dumps({"valid": code == EXIT_OK, "files": results}, indent=2))
        return code
    for r in results:
        if "io_error" in r:
            print(f"turnchart: {r['io_error']}", file=sys.stderr)
            continue
        for e in [*r["errors"], *r["warnings"]]:
            print(f"{e['path']}:{e['line']}:{e['col']}: {e['code']} {e['message']}")
        state = "ok" if r["valid"] else f"{len(r['errors'])} error(s)"
        warn = f", {len(r['warnings'])} warning(s)" if r["warnings"] else ""
        print(f"{r['path']}: {state}{warn}", file=sys.stderr)
    return code


def cmd_render(args: argparse.Namespace) -> int:
    from engine.chart.render import RenderUnavailable, render
    try:
        chart = load_chart(args.path, _registry(args.registry))
    except ChartErrors as exc:
        for e in exc.errors:
            print(e)
        return EXIT_INVALID
    except (OSError, UnicodeDecodeError) as exc:
        print(f"turnchart: cannot read {args.path}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        text = render(chart, args.format)
    except RenderUnavailable as exc:
        print(f"turnchart: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")
    return EXIT_OK


def _settings(args: argparse.Namespace) -> Settings | None:
    """config.yaml (`--config`, else ./config.yaml if present, else the embedded
    defaults) with the environment overrides; None (reported) when unusable."""
    import os

    from adapters.config import ConfigError, apply_env, load_settings
    config = args.config
    if config is None and Path("config.yaml").is_file():
        config = "config.yaml"
    try:
        return apply_env(load_settings(config), dict(os.environ))
    except ConfigError as exc:
        print(f"turnchart: {exc}", file=sys.stderr)
        return None


def cmd_serve(args: argparse.Namespace) -> int:
    # The config is checked before the server (and its speech stack) is imported: a
    # mistake in it is reported in a fraction of a second.
    settings = _settings(args)
    if settings is None:
        return EXIT_USAGE
    if args.host:
        settings.server.host = args.host
    if args.port:
        settings.server.port = args.port
    if args.redis:
        from adapters.config import bus_problem
        problem = bus_problem(args.redis)
        if problem:
            print(f"turnchart: --redis: {problem}", file=sys.stderr)
            return EXIT_USAGE
        settings.bus = args.redis
    if not _registry_usable(args, settings):
        return EXIT_USAGE
    from adapters.server.run import serve
    return serve(settings)


def _registry_usable(args: argparse.Namespace, settings: Settings) -> bool:
    """`--registry` wins over config.yaml's `registry:` (and TURNCHART_REGISTRY); the
    spec is tried at once, so a bad one is one line on stderr before anything starts."""
    from adapters.registry_spec import RegistrySpecError, load_registry
    if args.registry:
        settings.registry = args.registry
    if settings.registry:
        try:
            load_registry(settings.registry)
        except RegistrySpecError as exc:
            print(f"turnchart: {exc}", file=sys.stderr)
            return False
    return True


def cmd_simulate(args: argparse.Namespace) -> int:
    from engine.runtime.logs import JsonLinesSink
    from engine.tools.simulator import ScenarioError, simulate_file, transitions
    out = None
    try:
        if args.out:
            out = open(args.out, "w", encoding="utf-8")  # noqa: SIM115 - closed below
        sink = JsonLinesSink(out or sys.stdout)
        trace = simulate_file(args.scenario, args.chart, _registry(args.registry), sink)
    except ScenarioError as exc:
        print(f"turnchart: bad scenario:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except ChartErrors as exc:
        print(f"turnchart: bad chart:\n{exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"turnchart: {exc}", file=sys.stderr)
        return EXIT_USAGE
    finally:
        if out is not None:
            out.close()
    errors = sum(1 for r in trace if r["level"] == "ERROR")
    moves = len(transitions(trace))
    print(f"simulated {args.scenario}: {moves} transition(s), {errors} ERROR line(s)"
          + (f", trace in {args.out}" if args.out else ""), file=sys.stderr)
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    if args.suite == "compile":
        from benchmarks.compile_bench import run as run_compile
        result = run_compile()
    elif args.suite == "redis":
        from benchmarks.redis_bench import run as run_redis
        from benchmarks.redis_bench import run_quick as run_redis_quick
        result = run_redis_quick() if getattr(args, "quick", False) else run_redis()
    elif args.suite == "voice":
        from benchmarks.voice_bench import run as run_voice
        result = run_voice(turns=args.turns)
    elif args.suite == "caller":
        from benchmarks.caller_bench import run as run_caller
        result = run_caller(quick=args.quick)
    elif args.suite == "soak":
        from benchmarks.soak_bench import run as run_soak
        try:
            result = run_soak(sessions=1000 if args.sessions is None else args.sessions,
                              duration_s=args.duration_s, rate_multiplier=args.rate_multiplier,
                              seed=args.seed)
        except ValueError as exc:
            print(f"turnchart bench soak: {exc}", file=sys.stderr)
            return EXIT_USAGE
    else:
        from benchmarks.engine_bench import run as run_engine
        result = run_engine(events=args.events,
                            sessions=10_000 if args.sessions is None else args.sessions,
                            profile=args.profile)
    text = json.dumps(result, indent=2)
    if args.out:
        Path(args.out).write_text(text + "\n", encoding="utf-8")
    print(text)
    return EXIT_OK


def cmd_worker(args: argparse.Namespace) -> int:
    import asyncio

    from adapters.cli.worker import run_live_worker
    settings = _settings(args)
    if settings is None:
        return EXIT_USAGE
    url = args.redis or (settings.bus if settings.bus.startswith("redis") else None)
    if not url:
        print("turnchart: worker needs --redis URL (or bus: redis://… in config.yaml)",
              file=sys.stderr)
        return EXIT_USAGE
    chart = args.chart or (settings.charts[0] if settings.charts else None)
    if not _registry_usable(args, settings):
        return EXIT_USAGE
    return asyncio.run(run_live_worker(url, settings, chart_path=str(chart),
                                       registry=_registry(settings.registry),
                                       worker_id=args.worker_id, lease_ms=args.lease_ms,
                                       headless=args.headless, redis_wait_s=args.redis_wait))


def _port(text: str) -> int:
    """`--port`: a TCP port number, checked as config.yaml's `server.port` is."""
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port number (1-65535)")
    return port


def _version() -> str:
    """The installed distribution's version (pyproject.toml's `version`)."""
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("turnchart")
    except PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown (not installed)"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="turnchart", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action="version", version=f"turnchart {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("validate", help="check chart files; print every problem with its position")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--registry", metavar="MODULE:FACTORY",
                   help="a Registry factory for charts with your own guards/effects/activities")
    p.set_defaults(func=cmd_validate)

    p = sub.add_parser("render", help="draw a chart as Mermaid, DOT, SVG or JSON")
    p.add_argument("path", metavar="PATH")
    p.add_argument("--format", choices=["mermaid", "dot", "svg", "json"], default="mermaid")
    p.add_argument("-o", "--output", metavar="FILE")
    p.add_argument("--registry", metavar="MODULE:FACTORY")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("simulate", help="run a scenario on a virtual clock; print the trace")
    p.add_argument("scenario", metavar="SCENARIO.yaml")
    p.add_argument("--chart", metavar="PATH", help="use this chart instead of the scenario's")
    p.add_argument("--out", metavar="FILE", help="write the JSON-lines trace here (default stdout)")
    p.add_argument("--registry", metavar="MODULE:FACTORY")
    p.set_defaults(func=cmd_simulate)

    p = sub.add_parser("bench",
                       help="benchmarks, JSON output: compile | engine | voice | redis | soak"
                       " | caller")
    p.add_argument("suite", choices=["compile", "engine", "voice", "redis", "soak", "caller"])
    p.add_argument("--quick", action="store_true",
                   help="caller: a short run (fewer utterances, one call at a time); "
                        "redis: only worker CPU per event against the session step")
    p.add_argument("--turns", type=int, default=20, help="voice: turns to measure")
    p.add_argument("--events", type=int, default=3000, help="engine: events per measurement")
    p.add_argument("--sessions", type=int, default=None,
                   help="engine: sessions to create (10000); soak: simulated callers (1000)")
    p.add_argument("--duration-s", type=float, default=60.0, help="soak: seconds to run")
    p.add_argument("--rate-multiplier", type=float, default=10.0,
                   help="soak: calls run this many times faster than real ones")
    p.add_argument("--seed", type=int, default=7, help="soak: random seed of the callers")
    p.add_argument("--profile", action="store_true", help="engine: add a cProfile top list")
    p.add_argument("--out", metavar="FILE", help="also write the JSON here")
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("serve", help="run the HTTP server (charts, health; live voice later)")
    p.add_argument("--host")
    p.add_argument("--port", type=_port, help="1-65535 (default: config.yaml's, 5204)")
    p.add_argument("--config", metavar="PATH",
                   help="config.yaml (default: ./config.yaml if present)")
    p.add_argument("--redis", metavar="URL",
                   help="run sessions on Redis workers (turnchart worker) instead of in-process")
    p.add_argument("--registry", metavar="MODULE:FACTORY",
                   help="your own guards/effects/activities (default: config.yaml's registry:)")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("worker", help="own and run sessions from Redis (no audio, no HTTP)")
    p.add_argument("--redis", metavar="URL",
                   help="redis://host:port/db, or redis+cluster://host:port for a Redis "
                        "Cluster (or bus: in config)")
    p.add_argument("--config", metavar="PATH")
    p.add_argument("--chart", metavar="PATH", help="default: the config's first chart")
    p.add_argument("--registry", metavar="MODULE:FACTORY",
                   help="your own guards/effects/activities (default: config.yaml's registry:)")
    p.add_argument("--worker-id")
    p.add_argument("--lease-ms", type=int, default=5000)
    p.add_argument("--headless", action="store_true",
                   help="fake responder and speech (no models): load tests")
    p.add_argument("--redis-wait", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for Redis at start-up before exiting 1 (default 30)")
    p.set_defaults(func=cmd_worker)

    from adapters.cli.replay import add_replay_command
    add_replay_command(sub)

    from adapters.cli.paths import add_paths_parser
    add_paths_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from adapters.registry_spec import RegistrySpecError
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.func(args)
        sys.stdout.flush()  # a closed pipe shows up here, not at interpreter exit
    except BrokenPipeError:
        return _stdout_closed()
    except KeyboardInterrupt:  # Ctrl-C before serve's server took the signal over
        print("turnchart: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RegistrySpecError as exc:
        print(f"turnchart: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ImportError, AttributeError, TypeError) as exc:
        if getattr(args, "registry", None):
            print(f"turnchart: cannot use --registry {args.registry}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        raise
    return result


def _stdout_closed() -> int:
    """The reader of stdout is gone: exit quietly like a Unix tool. What is still
    buffered goes to /dev/null, so Python's flush at exit cannot complain either."""
    import os
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)
    return EXIT_PIPE


if __name__ == "__main__":
    raise SystemExit(main())
