from __future__ import annotations

from ffserve.service.cli import main

raise SystemExit(main())
