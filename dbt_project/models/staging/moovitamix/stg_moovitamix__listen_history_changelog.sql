-- Spark only: the changes of listen_history between the lake's snapshots, appended build by build
{{
    config(
        enabled=target.type == 'spark',
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='append_new_columns'
    )
}}
{{ version_changelog('listen_history', 'user_id') }}
