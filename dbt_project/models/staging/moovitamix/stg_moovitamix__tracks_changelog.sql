-- Spark only: the changes of tracks between the lake's snapshots, appended build by build
{{
    config(
        enabled=target.type == 'spark',
        materialized='incremental',
        incremental_strategy='append',
        on_schema_change='append_new_columns'
    )
}}
{{ version_changelog('tracks', 'id') }}
