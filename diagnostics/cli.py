"""The `flatline` command line.

    flatline train CONFIG [--set key=value ...] [--out DIR] [--probes none|cheap|full]

Bad input (config, data, model location) is reported as one line on stderr with exit code 2, before any
model loads or any file is written.
"""
from __future__ import annotations

import argparse
import sys

from trainer.errors import FlatlineError

EXIT_USAGE = 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flatline", description="Find out why a GRPO run is not learning.")
    commands = parser.add_subparsers(dest="command", required=True)
    train = commands.add_parser("train", help="train with probes on and write a run directory")
    train.add_argument("config", help="TOML config, e.g. configs/default.toml")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key (repeatable), e.g. --set learning_rate=1e-4")
    train.add_argument("--out", help="run directory (a new suffix is added if it exists)")
    train.add_argument("--probes", choices=("none", "cheap", "full"),
                       help="instruments to run (default: the config's `probes`, cheap unless set)")
    return parser


def probe_listeners(trainer) -> list:
    """The probes of the config's level, attached to a built trainer."""
    from probes import ProbeContext, build_probes

    level = trainer.cfg.probes
    if level == "none":
        return []
    return [build_probes(level, ProbeContext.from_trainer(trainer), trainer.cfg.max_grad_norm)]


def cmd_train(args) -> int:
    from trainer.config import load_config
    from trainer.run import train

    overrides = args.overrides + ([f"probes={args.probes}"] if args.probes else [])
    cfg = load_config(args.config, overrides)
    train(cfg, out=args.out, make_listeners=probe_listeners)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"train": cmd_train}[args.command](args)
    except FlatlineError as exc:
        print(f"flatline: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("flatline: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
