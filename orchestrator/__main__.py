"""`python -m orchestrator ...` is the same as `danlu ...`."""

from orchestrator.cli import main

raise SystemExit(main())
