from orchestrator.daily import main

raise SystemExit(main())
