#!/usr/bin/env python3
"""What `docker build` would send as its context, by .dockerignore's rules.

    dockerignore.py ROOT [PATH...]   prints each PATH (relative to ROOT) that the
                                     context would hold; none given: every file
                                     under ROOT that it would hold.

Matching follows moby/patternmatcher (the Docker CLI's): each line is a pattern
relative to the context root (a leading "/" is dropped, the path is cleaned);
"*" and "?" do not cross "/", "**" matches any number of folders; a pattern
also excludes everything under a folder it matches; "!" re-includes; the last
matching line wins. Used by tests/integration/test_dockerfile.sh (no container
engine on the test machines).
"""
import os
import posixpath
import re
import sys


def compile_pattern(pat):
    out = ""
    i = 0
    while i < len(pat):
        c = pat[i]
        if c == "*":
            if pat[i:i + 2] == "**":
                # "**/" : zero or more folders; "**" at the end: anything
                if pat[i:i + 3] == "**/":
                    out += "(?:.*/)?"
                    i += 3
                    continue
                out += ".*"
                i += 2
                continue
            out += "[^/]*"
        elif c == "?":
            out += "[^/]"
        elif c == "[":
            j = pat.find("]", i)
            if j < 0:
                out += re.escape(c)
            else:
                out += "[" + pat[i + 1:j].replace("\\", "\\\\") + "]"
                i = j
        elif c == "\\" and i + 1 < len(pat):
            i += 1
            out += re.escape(pat[i])
        else:
            out += re.escape(c)
        i += 1
    return re.compile("^" + out + "$")


def load(root):
    rules = []
    path = os.path.join(root, ".dockerignore")
    if not os.path.exists(path):
        return rules
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            neg = line.startswith("!")
            if neg:
                line = line[1:].strip()
            line = posixpath.normpath(line.lstrip("/"))
            rules.append((neg, compile_pattern(line)))
    return rules


def excluded(rules, rel):
    parts = rel.split("/")
    prefixes = ["/".join(parts[:k]) for k in range(1, len(parts) + 1)]
    result = False
    for neg, rx in rules:
        if any(rx.match(p) for p in prefixes):
            result = not neg
    return result


def main():
    root = sys.argv[1]
    rules = load(root)
    if len(sys.argv) > 2:
        for rel in sys.argv[2:]:
            rel = posixpath.normpath(rel.lstrip("/"))
            if not excluded(rules, rel):
                print(rel)
        return
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        reldir = os.path.relpath(dirpath, root)
        reldir = "" if reldir == "." else reldir
        keep = []
        for d in dirnames:
            rel = posixpath.join(reldir, d) if reldir else d
            full = os.path.join(dirpath, d)
            if os.path.islink(full):
                filenames.append(d)  # a symlink is sent as a link, not followed
            elif not excluded(rules, rel) or any(neg for neg, _ in rules):
                keep.append(d)
        dirnames[:] = keep
        for name in filenames:
            rel = posixpath.join(reldir, name) if reldir else name
            if not excluded(rules, rel):
                print(rel)


if __name__ == "__main__":
    main()
