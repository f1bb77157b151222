"""`python -m oaievalset`."""

from oaievalset.cli import main

raise SystemExit(main())
