{#-
    The marts' hooks that only mean something on Postgres, as macros that give nothing on the
    other targets (Spark has no work_mem, and its statistics and keys are not ours to keep).
-#}

{#- pre-hook: the marts' aggregations and sorts stay in memory (Postgres' default is 4MB). -#}
{% macro set_marts_work_mem() -%}
    {%- if target.type == 'postgres' -%}
        set local work_mem = '{{ var('marts_work_mem', '256MB') }}'
    {%- endif -%}
{%- endmacro %}

{#- post-hook: fresh statistics for the models that read this one in the same build. -#}
{% macro analyze_model() -%}
    {%- if target.type == 'postgres' -%}
        analyze {{ this }}
    {%- endif -%}
{%- endmacro %}

{#-
    Grants on Spark: a local Spark (Hive metastore, no authorizer) has no roles to grant to; who
    may read the lake and the metastore is the storage's business. The marts' `grants` config
    applies on Postgres only.
-#}
{% macro spark__apply_grants(relation, grant_config, should_revoke) -%}
{%- endmacro %}

{#-
    pre-hook of fct_listens (after its deletes): aggregate by sorting, and check the users and
    tracks by hash or merge joins. Postgres estimates the items joined to their versions (a
    join on user id and record hash, whose selectivities it multiplies) at a few thousand rows
    where there are tens of millions; it then plans hash aggregations that spill and sorts by
    track and by user for the checks, or an index probe per pair. Sorted, a full build sorts
    the rows once, in parallel workers, by user, track and position, and both aggregations and
    the checks read them in that order (dbt_project/README.md); an incremental build's checks
    become merge joins too.
-#}
{% macro plan_listens_build() -%}
    {%- if target.type == 'postgres' -%}
        set local enable_hashagg = off;
        set local enable_nestloop = off
    {%- endif -%}
{%- endmacro %}
