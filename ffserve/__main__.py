from __future__ import annotations

from ffserve.cli import main

raise SystemExit(main())
