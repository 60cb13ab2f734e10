"""Shared plumbing for every step of the MooVitamix warehouse.

Settings, the warehouse connection (embedded or external), run ids and run logs. Each step
(`ingestion`, `dbt_project`, `expectations`, `ml`) builds on this package; nothing here knows
about any one step.
"""
