#!/usr/bin/python3
"""faketcp(8) against the CLI's own help, and rendered the way man and lintian do.

Usage: check_man.py FAKETCP MANPAGE      (make man-check, part of make test)

The man page is written by hand, so this is what keeps it true:
  - every flag of 'faketcp client --help' and 'faketcp server --help' has exactly one
    entry for that role (its section CLIENT or SERVER, or OPTIONS for both), with the
    same short name and value name, and its entry states the help's default;
  - every entry is a flag of the help (an entry under OPTIONS: of both roles), and
    every --flag the page mentions anywhere exists;
  - the version in the page's footer is what --version prints;
  - groff -ww and man --warnings (also as lintian runs it) render it without a word
    on stderr.
Prints one line per problem and exits 1; 77 when groff or man is missing.
"""
import os
import re
import shutil
import subprocess
import sys

# --flags of other programs the page may mention ('systemctl enable --now').
FOREIGN_FLAGS = {"--now"}


def run(argv, env=None):
    return subprocess.run(argv, capture_output=True, text=True, env=env)


def help_entries(faketcp, role):
    """{name: (short, value, text)} from 'faketcp ROLE --help'."""
    out = run([faketcp, role, "--help"])
    if out.returncode != 0:
        sys.exit(f"man-check: '{faketcp} {role} --help' exited {out.returncode}")
    entries, current = {}, None
    for line in out.stdout.splitlines():
        # "  -l, --local IP:PORT         text", "      --stats-interval SECONDS  text",
        # "      --ipv4-only             text": a value name follows after one space,
        # the text after two or more (or after the value's one space at column 30).
        m = re.match(r"^(?:  -(\S), |      )--([a-z0-9-]+)(?: ([A-Z][A-Z:]*))?(?: +(.*))?$", line)
        if m:
            short, name, value, text = m.group(1), m.group(2), m.group(3), m.group(4) or ""
            if name in entries:
                sys.exit(f"man-check: {role} --help lists --{name} twice")
            current = entries[name] = [short, value, text]
        elif current is not None and line.startswith(" " * 30):
            current[2] += " " + line.strip()
        else:
            current = None
    if not entries:
        sys.exit(f"man-check: found no flag in '{faketcp} {role} --help'")
    return {k: tuple(v) for k, v in entries.items()}


def render(page, width):
    """The page as plain text (no hyphenation, so words stay whole)."""
    out = run(["groff", "-man", "-Tascii", f"-rLL={width}n", "-rHY=0", "-P-cbou", page])
    if out.returncode != 0:
        sys.exit(f"man-check: groff failed on {page}: {out.stderr.strip()}")
    return out.stdout


def man_entries(text):
    """{section: [(short, name, value, body)]} for CLIENT, SERVER and OPTIONS."""
    sections, section, entry = {}, None, None
    for line in text.splitlines():
        if re.match(r"^[A-Z][A-Z ]*$", line):
            section, entry = line.strip(), None
            continue
        if section not in ("CLIENT", "SERVER", "OPTIONS"):
            continue
        m = re.match(r"^ {7}(?:-(\S), )?--([a-z0-9-]+)(?: (\S+))?\s*$", line)
        if m:
            entry = [m.group(1), m.group(2), m.group(3), ""]
            sections.setdefault(section, []).append(entry)
        elif entry is not None and line.startswith(" " * 14):
            entry[3] += " " + line.strip()
        elif line.strip():
            entry = None
    return {s: [tuple(e) for e in es] for s, es in sections.items()}


def default_of(text):
    """The help's default: what follows 'default: ' up to ',', ';' or ')'."""
    m = re.search(r"default: ([^);,]+)", text)
    return m.group(1).strip() if m else None


def short_text(short):
    return "-" + short if short else "none"


def states_default(body, value):
    clause = re.search(r"default: ([^)]*)", body)
    return clause is not None and re.search(r"(?<![\w.:])" + re.escape(value) + r"(?![\w.:])", clause.group(1))


def check_flags(faketcp, text, problems):
    helps = {role: help_entries(faketcp, role) for role in ("client", "server")}
    sections = man_entries(text)
    for s in ("CLIENT", "SERVER", "OPTIONS"):
        if not sections.get(s):
            problems.append(f"section {s} has no flag entry")
    for role, flags in helps.items():
        own = sections.get(role.upper(), []) + sections.get("OPTIONS", [])
        for name, (short, value, htext) in flags.items():
            found = [e for e in own if e[1] == name]
            if len(found) != 1:
                problems.append(f"{role} --help has --{name}; the page has {len(found)} entries for it"
                                f" under {role.upper()} and OPTIONS")
                continue
            mshort, _, mvalue, body = found[0]
            if mshort != short:
                problems.append(f"--{name}: short name {short_text(short)} in {role} --help, {short_text(mshort)}"
                                " in the page")
            if mvalue != value:
                problems.append(f"--{name}: value name {value} in {role} --help, {mvalue} in the page")
            d = default_of(htext)
            if d is not None and not states_default(body, d):
                problems.append(f"--{name}: {role} --help says default {d!r}; the page's entry does not"
                                f" (its text: {body.strip()[:120]!r})")
        for short, name, _, _ in sections.get(role.upper(), []):
            if name not in flags:
                problems.append(f"the page's {role.upper()} section has --{name}, which {role} --help lacks")
    for short, name, _, _ in sections.get("OPTIONS", []):
        for role, flags in helps.items():
            if name not in flags:
                problems.append(f"the page's OPTIONS has --{name}, which {role} --help lacks")
    known = {"--" + n for flags in helps.values() for n in flags} | FOREIGN_FLAGS
    for flag in sorted(set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", text)) - known):
        problems.append(f"the page mentions {flag}, which is no flag of faketcp")
    return {role: len(flags) for role, flags in helps.items()}


def check_version(faketcp, text, problems):
    v = run([faketcp, "--version"]).stdout.strip()  # "faketcp 0.1.0"
    footer = " ".join([l for l in text.splitlines() if l.strip()][-1].split())
    if not re.search(r"(?<!\S)" + re.escape(v) + r"(?!\S)", footer):
        problems.append(f"the page's footer {footer!r} does not carry {v!r}")


def check_rendering(page, problems):
    env = dict(os.environ, LC_ALL="C.UTF-8", MANWIDTH="80")
    runs = {
        "groff -ww -z -man": ["groff", "-ww", "-z", "-man", page],
        "man --warnings -l": ["man", "--warnings", "-l", page],
        # as lintian's manpages check does
        "man --warnings -E UTF-8 -l -Tutf8 -Z": ["man", "--warnings", "-E", "UTF-8", "-l", "-Tutf8", "-Z", page],
    }
    for what, argv in runs.items():
        out = run(argv, env=env)
        if out.returncode != 0 or out.stderr.strip():
            problems.append(f"'{what}' (exit {out.returncode}): {out.stderr.strip()}")


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: check_man.py FAKETCP MANPAGE")
    faketcp, page = sys.argv[1], sys.argv[2]
    for tool, package in (("groff", "groff-base"), ("man", "man-db")):
        if shutil.which(tool) is None:
            print(f"[SKIP] man-check: {tool} is missing (Debian package {package})", file=sys.stderr)
            sys.exit(77)
    problems = []
    text = render(page, 250)
    counts = check_flags(faketcp, text, problems)
    check_version(faketcp, text, problems)
    check_rendering(page, problems)
    for p in problems:
        print(f"man-check: {page}: {p}", file=sys.stderr)
    if problems:
        print(f"[FAIL] man-check: {len(problems)} problem(s)", file=sys.stderr)
        sys.exit(1)
    print(f"[ OK ] man-check: faketcp(8) has the {counts['client']} flags of client --help and the"
          f" {counts['server']} of server --help (names, value names, defaults), nothing else;"
          " groff and man render it without a warning")


if __name__ == "__main__":
    main()
