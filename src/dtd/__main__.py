from dtd.cli import main

raise SystemExit(main())
