"""`python -m export` is `python -m export.build`."""

from export.build import main

raise SystemExit(main())
