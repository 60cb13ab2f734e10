from dbt_project.cli import main

raise SystemExit(main())
