from moovitamix.cli import main

raise SystemExit(main())
