"""Paper reproductions: a registry, and the report each run writes.

``run("l0arm-mlp", quick=True)`` runs a registered experiment in a fresh run
folder holding ``report.md`` (the paper's numbers beside ours, the settings,
the machine, the wall time), ``results.json`` and PNG plots.
"""

from gatelab.reproduce.registry import Reproduction, available, get, register, run
from gatelab.reproduce.report import Report

__all__ = ["Reproduction", "Report", "available", "get", "register", "run"]
