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
