"""``python -m fastspike.bench``: the ``fastspike bench`` command without the console script."""
from .cli import main

raise SystemExit(main())
