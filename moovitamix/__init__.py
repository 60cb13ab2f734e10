"""The shared core of the MooVitamix warehouse: settings, the warehouse (embedded or external),
roles and grants, run ids, logs and the run ledger, write-audit-publish. The step packages build
on it and the orchestrator on them; nothing here knows any one step, table or endpoint."""
