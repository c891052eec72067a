"""``python -m service``: the same as the ``guidance-server`` command."""

from __future__ import annotations

from service.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
