"""``python -m bench.conformance``: see :mod:`bench.conformance`."""

from __future__ import annotations

from bench.conformance.evaluation import main

raise SystemExit(main())
