"""``python -m gatelab`` runs the command line (also under ``torchrun``)."""

from gatelab.cli import main

raise SystemExit(main())
