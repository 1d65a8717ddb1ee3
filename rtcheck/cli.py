"""The ``rtcheck`` command.

``rtcheck PATH...`` checks every course found below the paths (``check`` is the default
subcommand); ``rtcheck serve`` runs the DICOM node; ``rtcheck send`` sends reports to a DICOM
destination; ``rtcheck audit`` checks many submissions across centres; ``rtcheck example DIR``
writes the bundled synthetic example course;
``rtcheck protocol FILE`` validates a protocol.
Exit codes are those of :class:`rtcheck.errors.ExitCode` (documented in the README).
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from ._version import __version__
from .errors import ExitCode, InputError, RtcheckError, UsageError
from .terminal import closed_pipes_end_quietly, configure_logging, printable

if TYPE_CHECKING:
    from .assembly import CourseFiles
    from .protocol import Protocol
    from .report import Report

SUBCOMMANDS = ("check", "serve", "send", "audit", "example", "protocol", "dvh")

#: Exit code of a verdict (a :class:`rtcheck.report.Status` value; the report model is
#: imported only by the commands that check).
_STATUS_EXIT = {
    "per_protocol": ExitCode.PER_PROTOCOL,
    "acceptable_variation": ExitCode.ACCEPTABLE_VARIATION,
    "unacceptable_deviation": ExitCode.UNACCEPTABLE_DEVIATION,
    "not_evaluable": ExitCode.NOT_EVALUABLE,
}

#: Commands that run for a long time; every other one checks, writes or sends, and ends.
_SERVICES = ("serve", "audit")
#: Commands that only read and write files (no connection or thread of their own to close).
_FILES_ONLY = ("check", "example", "protocol", "dvh")


class _Parser(argparse.ArgumentParser):
    """argparse exits with 2 on a usage error, which would read as 'unacceptable deviation'."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(ExitCode.USAGE_ERROR, f"{self.prog}: error: {message}\n")


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The argument parser; ``command`` limits the subcommand options set up to that one."""
    parser = _Parser(prog="rtcheck", description="Check radiotherapy plans (DICOM-RT) against a trial protocol.")
    parser.add_argument("--version", action="version", version=f"rtcheck {__version__}")
    sub = parser.add_subparsers(dest="command", parser_class=_Parser)

    check = sub.add_parser("check", help="check the courses found in files/folders (the default command)")
    check.add_argument("paths", nargs="+", type=Path, help="RTPLAN files and/or folders (searched recursively)")
    check.add_argument("--protocol", type=Path, help="protocol YAML (default: the bundled trial protocol)")
    check.add_argument("--arm", help="judge the course as this arm instead of detecting it")
    check.add_argument(
        "--aliases",
        type=Path,
        action="append",
        default=[],
        metavar="FILE",
        help="a centre's structure names for the protocol's roles (YAML: aliases: {role: [name, ...]});"
        " <protocol>.aliases.yaml beside the protocol is read too",
    )
    check.add_argument(
        "--format",
        choices=("text", "json", *FILE_FORMATS),
        default="text",
        help="output format: html, pdf and dicom (an Encapsulated PDF in the plan's study) need -o",
    )
    check.add_argument(
        "-o",
        "--output",
        type=Path,
        help="write the report here instead of standard output (html/pdf/dicom with several courses: a folder)",
    )
    check.add_argument("--sr", action="store_true", help="with --format dicom, also write a Basic Text SR")
    check.add_argument("-q", "--quiet", action="store_true", help="print only the one-line verdict per course")
    check.add_argument("--no-color", action="store_true", help="plain text without colour")
    check.add_argument("--debug", action="store_true", help="show tracebacks and debug logging")

    example = sub.add_parser("example", help="write the synthetic example course (DICOM-RT) into a folder")
    example.add_argument("folder", type=Path)
    example.add_argument("--variant", default="compliant", help="which variant of the phantom course")
    example.add_argument("--list", action="store_true", help="list the variants and exit")

    dvh = sub.add_parser("dvh", help="DVH metrics of every structure of a structure set under a dose (no plan needed)")
    if command in (None, "dvh"):
        from .dvh_table import add_dvh_arguments

        add_dvh_arguments(dvh)

    proto = sub.add_parser("protocol", help="validate a protocol YAML and list its rules")
    proto.add_argument("file", type=Path, nargs="?", help="protocol YAML (default: the bundled one)")

    # The node, the sender and the audit bring heavy imports (pynetdicom, multiprocessing):
    # their options are only added when that command is the one being run.
    serve = sub.add_parser("serve", help="run the DICOM node that checks every plan it receives")
    send = sub.add_parser("send", help="send DICOM files (e.g. a report) to a DICOM node with C-STORE")
    audit = sub.add_parser("audit", help="protocol compliance of many submissions across centres (trial QA)")
    if command in (None, "serve"):
        from .node.config import add_serve_arguments

        add_serve_arguments(serve)
    if command in (None, "send"):
        from .send import add_send_arguments

        add_send_arguments(send)
    if command in (None, "audit"):
        from .audit.run import add_audit_arguments

        add_audit_arguments(audit)
    return parser


class _OncePerMessage(logging.Filter):
    """Let each distinct message through once (the same odd value in every file of an export)."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if message in self.seen:
            return False
        self.seen.add(message)
        return True


def _pydicom_warnings_once(*, quiet: bool) -> None:
    """One line per reading problem pydicom reports, none with --quiet.

    pydicom both logs each problem and raises it as a Python warning: the warning is
    silenced and the log record, which goes through rtcheck's escaping handler, kept once.
    """
    import warnings

    warnings.filterwarnings("ignore", module=r"pydicom(\.|$)")
    log = logging.getLogger("pydicom")
    for old in [f for f in log.filters if isinstance(f, _OncePerMessage)]:
        log.removeFilter(old)  # a new run (main called again in one process) starts afresh
    log.addFilter(_OncePerMessage())
    log.setLevel(logging.ERROR if quiet else logging.NOTSET)


def _normalise(argv: Sequence[str]) -> list[str]:
    """Make ``check`` the default subcommand: ``rtcheck plan.dcm`` is ``rtcheck check plan.dcm``."""
    args = list(argv)
    if args and args[0] not in SUBCOMMANDS and args[0] not in ("-h", "--help", "--version"):
        args.insert(0, "check")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args_list = _normalise(sys.argv[1:] if argv is None else argv)
    parser = build_parser(args_list[0] if args_list and args_list[0] in SUBCOMMANDS else None)
    if not args_list:
        parser.print_help(sys.stderr)
        return ExitCode.USAGE_ERROR
    args = parser.parse_args(args_list)
    debug = bool(getattr(args, "debug", False))
    configure_logging(logging.DEBUG if debug else logging.WARNING)
    _pydicom_warnings_once(quiet=bool(getattr(args, "quiet", False)) and not debug)
    with closed_pipes_end_quietly():
        return _run(parser, args, debug)


def _run(parser: argparse.ArgumentParser, args: argparse.Namespace, debug: bool) -> int:
    try:
        if args.command == "check":
            return _check(args)
        if args.command == "example":
            return _example(args)
        if args.command == "protocol":
            return _protocol(args)
        if args.command == "dvh":
            from .dvh_table import run_dvh

            return run_dvh(args)
        if args.command == "serve":
            from .node.server import run_serve

            return run_serve(args)
        if args.command == "send":
            from .send import run_send

            return run_send(args)
        if args.command == "audit":
            from .audit.run import run_audit

            return run_audit(args)
        parser.print_help(sys.stderr)
        return ExitCode.USAGE_ERROR
    except RtcheckError as exc:
        if debug:
            raise
        print(f"rtcheck: error: {printable(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception as exc:
        if debug:
            raise
        print(
            f"rtcheck: internal error: {type(exc).__name__}: {printable(exc)} (run with --debug for details)",
            file=sys.stderr,
        )
        return ExitCode.INTERNAL_ERROR


def _check(args: argparse.Namespace) -> int:
    from .api import check_course, load_protocol
    from .assembly import discover
    from .reports.text import print_report, render_json, summary_line

    protocol = load_protocol(args.protocol, args.aliases)
    if args.arm is not None and args.arm not in protocol.arms:
        raise InputError(None, f"unknown arm {args.arm!r}; the protocol's arms are {', '.join(protocol.arms)}")
    found = discover(args.paths, without_plan=True)
    for unreadable in found.unreadable:
        _warn(f"{unreadable.path}: {unreadable.problem}")
    for orphan in found.orphans:
        _warn(orphan)
    if not found.courses:
        if found.orphans:
            raise InputError(None, found.orphans[0])
        if found.unreadable:
            first = found.unreadable[0]
            raise InputError(first.path, first.problem)
        where = ", ".join(str(p) for p in args.paths)
        raise InputError(None, f"no RTPLAN found in {where} ({found.skipped} other DICOM file(s) skipped)")
    for course in found.courses:
        for problem in [*course.missing, *course.superseded, *course.unreadable]:
            _warn(problem)
    if args.format in FILE_FORMATS:
        reports = _write_files(args, found.courses, protocol)
    else:
        reports = [check_course(c, protocol, args.arm, debug=args.debug) for c in found.courses]
    worst_code = max(_STATUS_EXIT[r.verdict] for r in reports)
    if found.unreadable:
        # What could not be read lies in no course's folder: it may be a course of its own.
        worst_code = max(worst_code, ExitCode.INPUT_ERROR)
    if args.format in FILE_FORMATS:
        return worst_code
    out_file = args.output.open("w", encoding="utf-8") if args.output else sys.stdout
    try:
        if args.format == "json":
            payload = {
                "schema_version": reports[0].schema_version,
                "exit_code": int(worst_code),
                "reports": [json.loads(render_json(r)) for r in reports],
            }
            json.dump(payload, out_file, indent=2)
            out_file.write("\n")
        elif args.quiet:
            for r in reports:
                print(summary_line(r), file=out_file)
        else:
            from rich.console import Console

            console = Console(
                file=out_file,
                no_color=args.no_color or args.output is not None,
                highlight=False,
                width=None if args.output is None else 120,
            )
            for r in reports:
                print_report(r, console)
                console.print()
    finally:
        if args.output:
            out_file.close()
    return worst_code


def _warn(text: str) -> None:
    """One warning line on standard error; names and paths escaped (they come from the files)."""
    print(f"rtcheck: warning: {printable(text)}", file=sys.stderr)


#: Formats written to files (they are not text for a terminal).
FILE_FORMATS = ("html", "pdf", "dicom")
_SUFFIX = {"html": ".html", "pdf": ".pdf", "dicom": ".dcm"}


def _write_files(args: argparse.Namespace, courses: list[CourseFiles], protocol: Protocol) -> list[Report]:
    """HTML, PDF or DICOM reports: to ``-o FILE`` for one course, into ``-o DIR`` for several.

    Each course is checked, drawn and written in turn, its figures drawn from the workspace
    its rules measured in; only its report is kept once it is written.
    """
    from .api import check_workspace, open_workspace
    from .reports.dicom import filed_under, write_dicom, write_findings_sr
    from .reports.figures import build_figures
    from .reports.html import report_stem, write_html
    from .reports.pdf import write_pdf

    if args.output is None:
        raise InputError(None, f"--format {args.format} writes a file: give -o FILE (or -o DIR for several courses)")
    to_folder = args.output.is_dir() or str(args.output).endswith(("/", os.sep))
    if len(courses) > 1 and not to_folder:
        raise UsageError(
            f"-o {args.output}: {len(courses)} courses found, one --format {args.format} file each;"
            f" give a folder (-o {args.output.with_suffix('')}/) or check one course at a time"
        )
    if to_folder:
        args.output.mkdir(parents=True, exist_ok=True)
    reports = []
    for course in courses:
        workspace = open_workspace(course, protocol, args.arm)
        report = check_workspace(workspace, debug=args.debug)
        reports.append(report)
        path = args.output / (report_stem(report) + _SUFFIX[args.format]) if to_folder else args.output
        figures = build_figures(report, workspace)
        uid = filed_under(report)
        plan = workspace.plan_header(uid) if uid is not None else None  # as read for the check
        del workspace  # its doses and DVHs are not needed for the next course
        if args.format == "html":
            write_html(report, figures, path)
        elif args.format == "pdf":
            write_pdf(report, figures, path)
        else:
            write_dicom(report, figures, path, plan)
            if args.sr:
                write_findings_sr(report, path.with_name(path.stem + ".sr.dcm"), plan)
        print(f"{report.verdict.label.upper()}: wrote {printable(path)}", file=sys.stderr)
        del figures
        if not gc.isenabled():
            gc.collect()  # a figure is a web of references (figure, axes, artists): free it now
    return reports


def _example(args: argparse.Namespace) -> int:
    from .phantom import VARIANTS, write_course

    if args.list:
        for name, make in VARIANTS.items():
            doc = (make.__doc__ or "").strip().splitlines()
            print(f"{name:32s} {doc[0] if doc else ''}")
        return ExitCode.PER_PROTOCOL
    if args.variant not in VARIANTS:
        raise InputError(None, f"unknown variant {args.variant!r}; see 'rtcheck example --list x'")
    files = write_course(args.folder, args.variant)
    print(f"wrote {len(files)} files of the {args.variant!r} example course to {printable(args.folder)}")
    return ExitCode.PER_PROTOCOL


def _protocol(args: argparse.Namespace) -> int:
    from .api import load_protocol

    protocol = load_protocol(args.file)
    info = protocol.protocol
    print(printable(f"{info.name} v{info.version}: {len(protocol.rules)} rules, arms {', '.join(protocol.arms)}"))
    for rule in protocol.rules:
        arms = ",".join(rule.arms) or "all"
        pp = rule.per_protocol.text(rule.unit.value) if rule.per_protocol else "reported"
        print(printable(f"  {rule.id:28s} [{arms}] {pp}  ({rule.check})"))
    return ExitCode.PER_PROTOCOL


def run() -> NoReturn:
    """The ``rtcheck`` program (the console script and ``python -m rtcheck``): :func:`main`, then exit.

    A command that checks, writes or sends and then ends makes few reference cycles, and
    all its objects die with the process; the cyclic garbage collector would only walk its
    heap over and over (about a quarter of a check's CPU time, exit included). Such
    commands run without it, and those that only read and write files end without
    tearing the interpreter down (:func:`_end_now`). The node and the audit, which run
    for hours, keep the collector.
    """
    _without_pydantic_plugins()
    _one_blas_thread()
    args = _normalise(sys.argv[1:])
    one_shot = not args or args[0] not in _SERVICES
    if one_shot:
        gc.disable()
    code = main()
    if args and args[0] in _FILES_ONLY:
        _end_now(code)
    if one_shot:
        gc.freeze()
    sys.exit(code)


def _without_pydantic_plugins() -> None:
    """Tell pydantic not to look for plugins, unless the environment already says otherwise.

    Before it builds its first model, pydantic looks for plugins among the entry points of
    every distribution installed (``PYDANTIC_DISABLE_PLUGINS`` unset): some 2 ms of a check's
    start-up in a modest environment, more in a large one. rtcheck uses no pydantic plugin
    (plugins only observe validation), so the program sets the variable, which pydantic
    reads at that first build, to ``__all__``. Someone who wants a plugin to watch the
    program sets the variable themselves (``PYDANTIC_DISABLE_PLUGINS=`` enables them all).
    """
    os.environ.setdefault("PYDANTIC_DISABLE_PLUGINS", "__all__")


def _one_blas_thread() -> None:
    """Keep numpy's OpenBLAS to the calling thread, unless the environment already says otherwise.

    OpenBLAS starts a thread per core when numpy is imported, and those threads spin for a
    while before they sleep: on two cores, 0.13 s of CPU on the second core for every
    check, and more cores taken from the node's and the audit's other workers. rtcheck has
    no matrix product large enough to gain from them. The variable is read once, when
    numpy is first imported, so it is set here, before any command imports numpy; the
    node's and audit's worker processes inherit it. Setting ``OPENBLAS_NUM_THREADS``
    oneself keeps one's own choice.
    """
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _end_now(code: int) -> NoReturn:
    """End the process once its output is out, without the interpreter's teardown.

    Tearing down frees every module and object one by one (for a check of the example
    course, some 800 modules and the course's models: about 40 ms of CPU) only for the
    operating system to take the memory back anyway. These commands start no thread and
    hold no connection, and close the files they write (reports included) before
    :func:`main` returns: what is left is flushing the log handlers and standard streams.
    """
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):  # the reader is gone: nothing to deliver
            stream.flush()
    os._exit(code)


if __name__ == "__main__":
    run()
