"""python -m runtime: see runtime.cli."""

from .cli import main

raise SystemExit(main())
