"""`python -m export` is `python -m export.build`."""

from .build import main

raise SystemExit(main())
