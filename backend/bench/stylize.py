"""Placeholder: replaced by the stylize benchmark."""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def run(args: argparse.Namespace) -> int:
    print("not written yet")
    return 1
