"""``gatelab reproduce``: list and run paper reproductions."""

from __future__ import annotations

import argparse

from gatelab.options import add_common, positive_float


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "reproduce",
        help="run a paper's headline experiment and write a report",
        description="Run paper reproductions. Each run writes report.md, results.json "
        "and PNG plots into a fresh folder under --out.",
    )
    p.add_argument("names", nargs="*", metavar="NAME", help="reproductions to run (see --list)")
    p.add_argument("--list", action="store_true", help="list the reproductions and exit (default: off)")
    p.add_argument("--all", action="store_true", help="run every reproduction (default: only those named)")
    p.add_argument(
        "--quick", action="store_true", help="a few-minute version of the experiment (default: the full one)"
    )
    p.add_argument("--out", default="runs", help="folder for run folders (default: runs)")
    p.add_argument(
        "--resume",
        metavar="RUN_DIR",
        default=None,
        help="continue the interrupted run in this .NAME-....partial folder: finished stages are "
        "kept, the one in progress resumes from its checkpoint (default: start afresh)",
    )
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="change one of the reproduction's settings, e.g. --set models=A --set test_images=1000 for "
        "defense-vae-mnist (repeatable; a wrong key is refused with the accepted ones; the report lists the "
        "changes; a resumed run needs the same ones) (default: the quick or full settings unchanged)",
    )
    add_common(p)
    p.add_argument(
        "--checkpoint-every",
        type=positive_float,
        default=300.0,
        metavar="SECONDS",
        help="inside an epoch, each model's checkpoint is saved at most this often (default: 300)",
    )
    p.set_defaults(func=_main)


def _main(args) -> int:
    from gatelab.errors import GatelabError
    from gatelab.files import check_output_path
    from gatelab.reproduce import available, get, run

    known = available()
    if args.list:
        for name, rep in known.items():
            print(f"{name:18s} {rep.title}")
        return 0
    names = list(known) if args.all else args.names
    if not names:
        raise GatelabError("name a reproduction, or pass --all or --list; accepted: " + ", ".join(known))
    for name in names:  # check every name and setting before running any
        get(name).parse_overrides(args.overrides)
    if args.resume and len(names) != 1:
        raise GatelabError("--resume continues one run: name exactly one reproduction")
    check_output_path(args.resume or args.out, kind="dir")
    for name in names:
        run(
            name,
            quick=args.quick,
            out=args.out,
            seed=args.seed,
            device=args.device,
            resume=args.resume,
            quiet=args.quiet,
            checkpoint_every=args.checkpoint_every,
            overrides=args.overrides,
        )
    return 0
