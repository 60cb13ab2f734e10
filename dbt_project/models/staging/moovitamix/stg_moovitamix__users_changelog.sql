-- Spark only: the changes of users between the lake's snapshots, appended build by build
{{
    config(
        enabled=target.type == 'spark',
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='append_new_columns'
    )
}}
{{ version_changelog('users', 'id') }}
