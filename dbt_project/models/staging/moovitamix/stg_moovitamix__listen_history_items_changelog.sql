-- Spark only: each listen history version's list items, appended build by build
{{
    config(
        enabled=target.type == 'spark',
        materialized='incremental',
        incremental_strategy='append'
    )
}}
{{ list_items_changelog('listen_history__items') }}
